package tally.bench.flink.fold;

import tally.bench.flink.HllUsers;

/**
 * {@link HllUsers#estimate} without expanding a sparse sketch into 4,096 registers: most window
 * rows are of small keys, and the roll-up estimates every row it emits. A sparse sketch (at most
 * 512 updates) leaves at least 3,584 registers zero, where HyperLogLog's estimate is always the
 * linear-counting one, {@code m ln(m / zeros)}: only the number of registers set matters, counted
 * here in a 4,096-bit map. The result is the same as {@link HllUsers#estimate}'s.
 */
final class Estimate {
  private static final int M = 4096;
  /** Registers set up to which the linear-counting branch is certain (raw estimate below 2.5 m). */
  private static final int SURELY_LINEAR = 1024;

  private final long[] bits = new long[M / 64];

  long of(HllUsers.Acc acc) {
    if (acc.dense != null || acc.n > SURELY_LINEAR) {
      return HllUsers.estimate(acc);
    }
    java.util.Arrays.fill(bits, 0);
    byte[] sparse = acc.sparse;
    for (int at = 0; at < acc.n * 3; at += 3) {
      int index = ((sparse[at] & 0xff) << 8) | (sparse[at + 1] & 0xff);
      bits[index >>> 6] |= 1L << index;
    }
    int set = 0;
    for (long word : bits) {
      set += Long.bitCount(word);
    }
    int zeros = M - set;
    return Math.round(M * Math.log((double) M / zeros));
  }
}
