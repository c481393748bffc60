package tally.bench.flink.kafka;

import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.atomic.LongAdder;

/**
 * What the Kafka job's source reports to the harness in the same JVM (a local MiniCluster):
 * message counts, and the next offset to read per partition for sampling the consumer lag (the
 * fold's own counts are in {@link tally.bench.flink.fold.FoldStats}).
 */
public final class Counters {
  private Counters() {}

  /** Partitions whose progress is tracked; a topic may have more, which are then not sampled. */
  public static final int MAX_PARTITIONS = 4096;

  public static final LongAdder RECORDS = new LongAdder();
  public static final LongAdder REJECTED = new LongAdder();
  public static final AtomicLong FIRST_RECORD_NANOS = new AtomicLong(Long.MAX_VALUE);

  /** Next offset to read per partition, -1 until the first record of a partition. */
  public static final AtomicLongArray NEXT_OFFSET = new AtomicLongArray(MAX_PARTITIONS);

  static {
    for (int p = 0; p < MAX_PARTITIONS; p++) {
      NEXT_OFFSET.set(p, -1);
    }
  }

  static void consumed(int partition, long offset) {
    if (partition < MAX_PARTITIONS) {
      NEXT_OFFSET.lazySet(partition, offset + 1);
    }
  }
}
