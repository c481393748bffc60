package tally.bench.flink;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
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
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;

/**
 * A bounded source of exactly {@code gen.clicks} generated clicks as rows {@code (ad_id STRING,
 * ts BIGINT, user_id BIGINT, request_id BINARY(16))}.
 *
 * <p>The stream is cut into one split per parallel reader, interleaved: split {@code s} of
 * {@code p} produces positions {@code s, s + p, s + 2p, ...}, so every reader walks through
 * event time at the same pace, as the partitions of a log do. A split's state is its next
 * position, so it checkpoints and restores like any replayable source.
 */
public final class ClickSource implements Source<RowData, ClickSource.Split, Collection<ClickSource.Split>> {
  private static final long serialVersionUID = 1L;

  /** Highest checkpoint id any reader of this JVM was told is complete. */
  public static final AtomicLong LAST_COMPLETED_CHECKPOINT = new AtomicLong();
  /** Clicks, retries among them, and fresh too-late clicks that the splits of this JVM finished. */
  public static final LongAdder GENERATED = new LongAdder();

  public static final LongAdder RETRIES = new LongAdder();
  /** System.nanoTime() when the first click of this JVM was generated. */
  public static final AtomicLong FIRST_CLICK_NANOS = new AtomicLong(Long.MAX_VALUE);
  public static final LongAdder TOO_LATE = new LongAdder();

  private final ClickGen gen;

  public ClickSource(ClickGen gen) {
    this.gen = gen;
  }

  @Override
  public Boundedness getBoundedness() {
    return Boundedness.BOUNDED;
  }

  @Override
  public SourceReader<RowData, Split> createReader(SourceReaderContext context) {
    return new IteratorSourceReader<RowData, ClickIterator, Split>(context) {
      @Override
      public void notifyCheckpointComplete(long checkpointId) {
        LAST_COMPLETED_CHECKPOINT.accumulateAndGet(checkpointId, Math::max);
      }
    };
  }

  @Override
  public SplitEnumerator<Split, Collection<Split>> createEnumerator(SplitEnumeratorContext<Split> context) {
    int splits = Math.max(1, context.currentParallelism());
    List<Split> all = new ArrayList<>();
    for (int s = 0; s < splits; s++) {
      long end = gen.clicks > s ? (gen.clicks - s + splits - 1) / splits : 0;
      all.add(new Split(gen, s, splits, 0, end));
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
    return new SplitSerializer(gen);
  }

  @Override
  public SimpleVersionedSerializer<Collection<Split>> getEnumeratorCheckpointSerializer() {
    return new CheckpointSerializer(gen);
  }

  /** Positions {@code index + k * of} for {@code k} in {@code next..end}. */
  public static final class Split implements IteratorSourceSplit<RowData, ClickIterator> {
    final ClickGen gen;
    final int index;
    final int of;
    final long next;
    final long end;

    Split(ClickGen gen, int index, int of, long next, long end) {
      this.gen = gen;
      this.index = index;
      this.of = of;
      this.next = next;
      this.end = end;
    }

    @Override
    public String splitId() {
      return index + "/" + of;
    }

    @Override
    public ClickIterator getIterator() {
      return new ClickIterator(gen, index, of, next, end);
    }

    @Override
    public IteratorSourceSplit<RowData, ClickIterator> getUpdatedSplitForIterator(ClickIterator iterator) {
      return new Split(gen, index, of, iterator.k, end);
    }
  }

  /** Generates the rows of one split. */
  public static final class ClickIterator implements Iterator<RowData> {
    private final ClickGen gen;
    private final int index;
    private final int of;
    private final long end;
    private final StringData[] adNames;
    private final StringData viral;
    private final ClickGen.Click click = new ClickGen.Click();
    private long retries;
    private long tooLate;
    private long generated;
    private boolean started;
    long k;

    ClickIterator(ClickGen gen, int index, int of, long next, long end) {
      this.gen = gen;
      this.index = index;
      this.of = of;
      this.k = next;
      this.end = end;
      adNames = new StringData[gen.ads];
      for (int ad = 0; ad < gen.ads; ad++) {
        adNames[ad] = StringData.fromString(ClickGen.adName(ad));
      }
      viral = StringData.fromString(ClickGen.adName(ClickGen.VIRAL));
    }

    @Override
    public boolean hasNext() {
      return k < end;
    }

    @Override
    public RowData next() {
      if (k >= end) {
        throw new NoSuchElementException();
      }
      if (!started) {
        started = true;
        FIRST_CLICK_NANOS.accumulateAndGet(System.nanoTime(), Math::min);
      }
      gen.fill(index + k * of, click);
      k++;
      generated++;
      if (click.retry) {
        retries++;
      } else if (click.tooLate) {
        tooLate++;
      }
      if (k == end) {
        GENERATED.add(generated);
        RETRIES.add(retries);
        TOO_LATE.add(tooLate);
        generated = retries = tooLate = 0;
      }
      byte[] request = new byte[16];
      long hi = click.requestHi;
      long lo = click.requestLo;
      for (int i = 7; i >= 0; i--) {
        request[i] = (byte) hi;
        request[i + 8] = (byte) lo;
        hi >>>= 8;
        lo >>>= 8;
      }
      return GenericRowData.of(click.ad == ClickGen.VIRAL ? viral : adNames[click.ad], click.ts, click.user, request);
    }
  }

  private static final class SplitSerializer implements SimpleVersionedSerializer<Split> {
    private final ClickGen gen;

    SplitSerializer(ClickGen gen) {
      this.gen = gen;
    }

    @Override
    public int getVersion() {
      return 1;
    }

    @Override
    public byte[] serialize(Split split) throws IOException {
      ByteArrayOutputStream bytes = new ByteArrayOutputStream(24);
      DataOutputStream out = new DataOutputStream(bytes);
      write(split, out);
      out.flush();
      return bytes.toByteArray();
    }

    @Override
    public Split deserialize(int version, byte[] serialized) throws IOException {
      return read(gen, new DataInputStream(new ByteArrayInputStream(serialized)));
    }
  }

  private static final class CheckpointSerializer implements SimpleVersionedSerializer<Collection<Split>> {
    private final ClickGen gen;

    CheckpointSerializer(ClickGen gen) {
      this.gen = gen;
    }

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
        splits.add(read(gen, in));
      }
      return splits;
    }
  }

  private static void write(Split split, DataOutputStream out) throws IOException {
    out.writeInt(split.index);
    out.writeInt(split.of);
    out.writeLong(split.next);
    out.writeLong(split.end);
  }

  private static Split read(ClickGen gen, DataInputStream in) throws IOException {
    return new Split(gen, in.readInt(), in.readInt(), in.readLong(), in.readLong());
  }
}
