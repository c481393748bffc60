package tally.bench.flink.fold;

import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;

/**
 * What the fold reports to the harness in the same JVM (a local MiniCluster): clicks dropped as
 * retries and as too late, and the last checkpoint completed.
 */
public final class FoldStats {
  private FoldStats() {}

  public static final LongAdder DUPLICATES = new LongAdder();
  public static final LongAdder TOO_LATE = new LongAdder();
  /** The last checkpoint completed. */
  public static final AtomicLong CHECKPOINTS = new AtomicLong();
}
