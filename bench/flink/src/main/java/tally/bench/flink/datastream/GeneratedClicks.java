package tally.bench.flink.datastream;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
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
import tally.bench.flink.fold.GeneratedCatalog;

/**
 * The generated click stream of the SQL job's {@code ClickSource} (the same {@link ClickGen}
 * positions: seed, count and event-time rate), as {@link Click} objects for the DataStream job.
 *
 * <p>The split of positions differs: {@code ClickSource}'s split {@code s} of {@code p} takes
 * positions {@code s, s + p, ...}, and a retry at position {@code n} repeats a click 2 to 4,096
 * positions earlier, which another split generates about half the time (with {@code p = 2}). Here
 * split {@code s} takes, in order, every position whose {@linkplain ClickGen#origin origin} (the
 * position of the request's first copy) is {@code s} modulo {@code p}: a request and its retries
 * share a split, as the copies of a request share a partition of a log partitioned by request id,
 * so the split's reader can drop retries alone. Each reader walks all positions to find its own
 * (the origin takes two hash draws, no fresh click), so the readers move through event time
 * together. A split's state is the next position to look at.
 *
 * <p>One {@link Click} object per reader is refilled for every click (the ad name is one of a
 * fixed set of strings): the operators after the source keep nothing of a click, and a shuffle
 * serializes it on the way out.
 */
public final class GeneratedClicks implements Source<Click, GeneratedClicks.Split, Collection<GeneratedClicks.Split>> {
  private static final long serialVersionUID = 1L;

  /** Highest checkpoint id any reader of this JVM was told is complete. */
  public static final AtomicLong LAST_COMPLETED_CHECKPOINT = new AtomicLong();
  /** Clicks the splits of this JVM finished, the retries among them, and fresh too-late clicks. */
  public static final LongAdder GENERATED = new LongAdder();

  public static final LongAdder RETRIES = new LongAdder();
  public static final LongAdder TOO_LATE = new LongAdder();
  /** System.nanoTime() when the first click of this JVM was generated. */
  public static final AtomicLong FIRST_CLICK_NANOS = new AtomicLong(Long.MAX_VALUE);

  private final ClickGen gen;

  public GeneratedClicks(ClickGen gen) {
    this.gen = gen;
  }

  @Override
  public Boundedness getBoundedness() {
    return Boundedness.BOUNDED;
  }

  @Override
  public SourceReader<Click, Split> createReader(SourceReaderContext context) {
    return new IteratorSourceReader<Click, ClickIterator, Split>(context) {
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
      all.add(new Split(gen, s, splits, 0));
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

  /** The positions from {@code next} on whose origin is {@code index} modulo {@code of}. */
  public static final class Split implements IteratorSourceSplit<Click, ClickIterator> {
    final ClickGen gen;
    final int index;
    final int of;
    final long next;

    Split(ClickGen gen, int index, int of, long next) {
      this.gen = gen;
      this.index = index;
      this.of = of;
      this.next = next;
    }

    @Override
    public String splitId() {
      return index + "/" + of;
    }

    @Override
    public ClickIterator getIterator() {
      return new ClickIterator(gen, index, of, next);
    }

    @Override
    public IteratorSourceSplit<Click, ClickIterator> getUpdatedSplitForIterator(ClickIterator iterator) {
      return new Split(gen, index, of, iterator.pending >= 0 ? iterator.pending : iterator.k);
    }
  }

  /** Generates the clicks of one split into one reused {@link Click}. */
  public static final class ClickIterator implements Iterator<Click> {
    private final ClickGen gen;
    private final int index;
    private final int of;
    private final String[] adNames;
    private final String viral;
    private final ClickGen.Click drawn = new ClickGen.Click();
    private final Click click = new Click();
    private long generated;
    private long retries;
    private long tooLate;
    private boolean started;
    private boolean done;
    /** Next position to look at. */
    long k;
    /** The next position of this split found by {@link #hasNext}, or -1; and its origin. */
    long pending = -1;

    private long pendingOrigin;

    ClickIterator(ClickGen gen, int index, int of, long next) {
      this.gen = gen;
      this.index = index;
      this.of = of;
      this.k = next;
      adNames = new String[gen.ads];
      for (int ad = 0; ad < gen.ads; ad++) {
        adNames[ad] = GeneratedCatalog.adName(ad);
      }
      viral = GeneratedCatalog.adName(ClickGen.VIRAL);
    }

    @Override
    public boolean hasNext() {
      if (pending >= 0) {
        return true;
      }
      while (k < gen.clicks) {
        long n = k++;
        long origin = gen.origin(n);
        if (origin % of == index) {
          pending = n;
          pendingOrigin = origin;
          return true;
        }
      }
      if (!done) {
        done = true;
        GENERATED.add(generated);
        RETRIES.add(retries);
        TOO_LATE.add(tooLate);
      }
      return false;
    }

    @Override
    public Click next() {
      if (!hasNext()) {
        throw new NoSuchElementException();
      }
      if (!started) {
        started = true;
        FIRST_CLICK_NANOS.accumulateAndGet(System.nanoTime(), Math::min);
      }
      gen.fillFrom(pending, pendingOrigin, drawn);
      pending = -1;
      generated++;
      if (drawn.retry) {
        retries++;
      } else if (drawn.tooLate) {
        tooLate++;
      }
      click.ad = drawn.ad == ClickGen.VIRAL ? viral : adNames[drawn.ad];
      click.campaign = null;
      click.ts = drawn.ts;
      click.user = drawn.user;
      click.idHi = drawn.requestHi;
      click.idLo = drawn.requestLo;
      return click;
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
      ByteArrayOutputStream bytes = new ByteArrayOutputStream(16);
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
  }

  private static Split read(ClickGen gen, DataInputStream in) throws IOException {
    return new Split(gen, in.readInt(), in.readInt(), in.readLong());
  }
}
