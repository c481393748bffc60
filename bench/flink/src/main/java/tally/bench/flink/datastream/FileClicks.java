package tally.bench.flink.datastream;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Iterator;
import java.util.List;
import java.util.NoSuchElementException;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;

import org.apache.flink.api.connector.source.Boundedness;
import org.apache.flink.api.connector.source.Source;
import org.apache.flink.api.connector.source.SourceReader;
import org.apache.flink.api.connector.source.SourceReaderContext;
import org.apache.flink.api.connector.source.SplitEnumerator;
import org.apache.flink.api.connector.source.SplitEnumeratorContext;
import org.apache.flink.api.connector.source.lib.util.IteratorSourceEnumerator;
import org.apache.flink.api.connector.source.lib.util.IteratorSourceReader;
import org.apache.flink.api.connector.source.lib.util.IteratorSourceSplit;
import org.apache.flink.core.io.SimpleVersionedSerializer;

import tally.bench.flink.ClickGen;
import tally.bench.flink.fold.Click;
import tally.bench.flink.fold.ClickJson;

/**
 * A bounded source over an NDJSON click file as {@code tally gen} writes it, one click a line:
 *
 * <pre>
 * {"ad_id":"ad-000001","timestamp":1767225599031,"user_id":"u-42","request_id":"83cb6702-89d0-4e11-8be7-092645f884ed"}
 * </pre>
 *
 * <p>Split {@code s} of {@code p} reads the whole file and keeps the clicks whose request id
 * hashes to {@code s} ({@link #splitOf}), like one partition of a log partitioned by request id:
 * every copy of a request goes through one split, so the split's reader can drop retries alone.
 * Lines are parsed by {@link ClickJson} (the Kafka job's parser); a line that does not parse is
 * counted and skipped. A split's state is the byte offset of its next line.
 */
public final class FileClicks implements Source<Click, FileClicks.Split, Collection<FileClicks.Split>> {
  private static final long serialVersionUID = 1L;

  /** Lines the splits of this JVM read (each split reads every line) and kept. */
  public static final LongAdder KEPT = new LongAdder();
  /** Lines that did not parse, counted by split 0 only. */
  public static final LongAdder REFUSED = new LongAdder();
  /** System.nanoTime() when the first line of this JVM was read. */
  public static final AtomicLong FIRST_CLICK_NANOS = new AtomicLong(Long.MAX_VALUE);

  private final String path;

  public FileClicks(Path path) {
    this.path = path.toAbsolutePath().toString();
  }

  /** The split of a request id among {@code of}: all copies of a request land in one. */
  public static int splitOf(long idHi, long idLo, int of) {
    return (int) Long.remainderUnsigned(ClickGen.mix64(idHi ^ ClickGen.mix64(idLo)), of);
  }

  @Override
  public Boundedness getBoundedness() {
    return Boundedness.BOUNDED;
  }

  @Override
  public SourceReader<Click, Split> createReader(SourceReaderContext context) {
    return new IteratorSourceReader<>(context);
  }

  @Override
  public SplitEnumerator<Split, Collection<Split>> createEnumerator(SplitEnumeratorContext<Split> context) {
    int splits = Math.max(1, context.currentParallelism());
    List<Split> all = new ArrayList<>();
    for (int s = 0; s < splits; s++) {
      all.add(new Split(path, s, splits, 0));
    }
    return new IteratorSourceEnumerator<>(context, all);
  }

  @Override
  public SplitEnumerator<Split, Collection<Split>> restoreEnumerator(
      SplitEnumeratorContext<Split> context, Collection<Split> checkpoint) {
    return new IteratorSourceEnumerator<>(context, checkpoint);
  }

  @Override
  public SimpleVersionedSerializer<Split> getSplitSerializer() {
    return new SplitSerializer();
  }

  @Override
  public SimpleVersionedSerializer<Collection<Split>> getEnumeratorCheckpointSerializer() {
    return new CheckpointSerializer();
  }

  /** The clicks of the file from byte {@code offset} on whose request id is in split {@code index}. */
  public static final class Split implements IteratorSourceSplit<Click, LineIterator> {
    final String path;
    final int index;
    final int of;
    final long offset;

    Split(String path, int index, int of, long offset) {
      this.path = path;
      this.index = index;
      this.of = of;
      this.offset = offset;
    }

    @Override
    public String splitId() {
      return index + "/" + of;
    }

    @Override
    public LineIterator getIterator() {
      return new LineIterator(path, index, of, offset);
    }

    @Override
    public IteratorSourceSplit<Click, LineIterator> getUpdatedSplitForIterator(LineIterator iterator) {
      return new Split(path, index, of, iterator.pendingOffset());
    }
  }

  /** Reads lines into one reused {@link Click}, keeping the split's. */
  public static final class LineIterator implements Iterator<Click> {
    private final int index;
    private final int of;
    private final ClickJson json = new ClickJson();
    private final Click click = new Click();
    private FileChannel channel;
    private byte[] buf = new byte[1 << 20];
    /** File offset of buf[0]; valid bytes are buf[at, limit). */
    private long bufOffset;

    private int at;
    private int limit;
    private boolean eof;
    private boolean pending;
    /** File offset of the pending click's line. */
    private long pendingLine;

    private long kept;
    private long refused;
    private boolean done;

    LineIterator(String path, int index, int of, long offset) {
      this.index = index;
      this.of = of;
      try {
        channel = FileChannel.open(Path.of(path), StandardOpenOption.READ);
        channel.position(offset);
      } catch (IOException e) {
        throw new UncheckedIOException(e);
      }
      bufOffset = offset;
      FIRST_CLICK_NANOS.accumulateAndGet(System.nanoTime(), Math::min);
    }

    long pendingOffset() {
      return pending ? pendingLine : bufOffset + at;
    }

    @Override
    public boolean hasNext() {
      if (pending) {
        return true;
      }
      try {
        while (true) {
          int nl = -1;
          for (int i = at; i < limit; i++) {
            if (buf[i] == '\n') {
              nl = i;
              break;
            }
          }
          if (nl < 0) {
            if (!eof && fill()) {
              continue;
            }
            if (at == limit) {
              finish();
              return false;
            }
            nl = limit; // a last line without a newline
          }
          long line = bufOffset + at;
          int from = at;
          at = Math.min(nl + 1, limit);
          if (nl == from || (nl - from == 1 && buf[from] == '\r')) {
            continue; // an empty line
          }
          if (!json.read(buf, from, nl, click)) {
            refused++;
            continue;
          }
          if (splitOf(click.idHi, click.idLo, of) == index) {
            kept++;
            pending = true;
            pendingLine = line;
            return true;
          }
        }
      } catch (IOException e) {
        throw new UncheckedIOException(e);
      }
    }

    /** Moves the unread bytes to the front and reads more; false at the end of the file. */
    private boolean fill() throws IOException {
      int rest = limit - at;
      if (rest == buf.length) {
        buf = java.util.Arrays.copyOf(buf, buf.length * 2);
      } else {
        System.arraycopy(buf, at, buf, 0, rest);
      }
      bufOffset += at;
      at = 0;
      limit = rest;
      int n = channel.read(ByteBuffer.wrap(buf, limit, buf.length - limit));
      if (n < 0) {
        eof = true;
        return false;
      }
      limit += n;
      return true;
    }

    private void finish() throws IOException {
      if (!done) {
        done = true;
        channel.close();
        KEPT.add(kept);
        if (index == 0) {
          REFUSED.add(refused);
        }
      }
    }

    @Override
    public Click next() {
      if (!hasNext()) {
        throw new NoSuchElementException();
      }
      pending = false;
      return click;
    }
  }

  private static final class SplitSerializer implements SimpleVersionedSerializer<Split> {
    @Override
    public int getVersion() {
      return 1;
    }

    @Override
    public byte[] serialize(Split split) throws IOException {
      ByteArrayOutputStream bytes = new ByteArrayOutputStream();
      DataOutputStream out = new DataOutputStream(bytes);
      write(split, out);
      out.flush();
      return bytes.toByteArray();
    }

    @Override
    public Split deserialize(int version, byte[] serialized) throws IOException {
      return read(new DataInputStream(new ByteArrayInputStream(serialized)));
    }
  }

  private static final class CheckpointSerializer implements SimpleVersionedSerializer<Collection<Split>> {
    @Override
    public int getVersion() {
      return 1;
    }

    @Override
    public byte[] serialize(Collection<Split> splits) throws IOException {
      ByteArrayOutputStream bytes = new ByteArrayOutputStream();
      DataOutputStream out = new DataOutputStream(bytes);
      out.writeInt(splits.size());
      for (Split split : splits) {
        write(split, out);
      }
      out.flush();
      return bytes.toByteArray();
    }

    @Override
    public Collection<Split> deserialize(int version, byte[] serialized) throws IOException {
      DataInputStream in = new DataInputStream(new ByteArrayInputStream(serialized));
      int count = in.readInt();
      List<Split> splits = new ArrayList<>(count);
      for (int i = 0; i < count; i++) {
        splits.add(read(in));
      }
      return splits;
    }
  }

  private static void write(Split split, DataOutputStream out) throws IOException {
    out.writeUTF(split.path);
    out.writeInt(split.index);
    out.writeInt(split.of);
    out.writeLong(split.offset);
  }

  private static Split read(DataInputStream in) throws IOException {
    return new Split(in.readUTF(), in.readInt(), in.readInt(), in.readLong());
  }
}
