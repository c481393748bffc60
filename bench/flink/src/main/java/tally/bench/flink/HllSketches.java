package tally.bench.flink;

import java.util.Arrays;

import org.apache.flink.table.functions.AggregateFunction;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * {@link HllUsers}'s sketch as a {@code BYTES} value, so that distinct users can be rolled up
 * from one window to a larger one in SQL (cascading window aggregation):
 *
 * <ul>
 *   <li>{@code hll_sketch(user_id BIGINT) -> BYTES}: the sketch of the users, as {@code hll_users}
 *       builds it;
 *   <li>{@code hll_merge(sketch BYTES) -> BYTES}: the union of sketches (register maximum);
 *   <li>{@code hll_estimate(sketch BYTES) -> BIGINT}: the estimate, {@link HllUsers#estimate}.
 * </ul>
 *
 * <p>Same registers, hash and estimator as {@code hll_users}: the sketch is {@link HllUsers.Acc},
 * filled by {@link HllUsers#addUser} and merged by {@link HllUsers#mergeInto}, so {@code
 * hll_estimate(hll_merge(s))} over the sketches of parts of a set of users gives what {@code
 * hll_users} gives over the whole set. Encoding: the 4,096 dense registers, or the sparse updates
 * (3 bytes each, at most {@link HllUsers#SPARSE_MAX}, so never 4,096 bytes long); empty: no users.
 */
public final class HllSketches {
  private HllSketches() {}

  /** A sketch's bytes, a copy: the dense registers or the sparse updates in use. */
  static byte[] encode(HllUsers.Acc acc) {
    if (acc.dense != null) {
      return acc.dense.clone();
    }
    return acc.sparse == null ? new byte[0] : Arrays.copyOf(acc.sparse, acc.n * 3);
  }

  /** A read-only view of encoded bytes as a sketch (shares the array). */
  static HllUsers.Acc decode(byte[] bytes) {
    HllUsers.Acc acc = new HllUsers.Acc();
    if (bytes.length == HllUsers.M) {
      acc.dense = bytes;
    } else {
      if (bytes.length % 3 != 0 || bytes.length > 3 * HllUsers.SPARSE_MAX) {
        throw new IllegalArgumentException("not an HLL sketch: " + bytes.length + " bytes");
      }
      acc.sparse = bytes;
      acc.n = bytes.length / 3;
    }
    return acc;
  }

  /** {@code hll_sketch(user_id)}: the users' sketch as bytes. */
  public static final class Sketch extends AggregateFunction<byte[], HllUsers.Acc> {
    @Override
    public HllUsers.Acc createAccumulator() {
      return new HllUsers.Acc();
    }

    public void accumulate(HllUsers.Acc acc, Long user) {
      if (user != null) {
        HllUsers.addUser(acc, user);
      }
    }

    public void merge(HllUsers.Acc acc, Iterable<HllUsers.Acc> others) {
      for (HllUsers.Acc other : others) {
        HllUsers.mergeInto(acc, other);
      }
    }

    /**
     * A HyperLogLog sketch cannot forget a user. The planner asks for this method when mini-batch
     * is on ({@code ClicksJob --mini-batch on}): it then types the keep-first deduplication's
     * output as a changelog, although that operator emits inserts only (the first row of each
     * request id). So this is never called there; if it were, the job fails rather than count
     * wrong.
     */
    public void retract(HllUsers.Acc acc, Long user) {
      throw new UnsupportedOperationException("hll_sketch cannot retract a user; its input must be insert-only");
    }

    @Override
    public byte[] getValue(HllUsers.Acc acc) {
      return encode(acc);
    }
  }

  /** {@code hll_merge(sketch)}: the union of sketches, as bytes. */
  public static final class Merge extends AggregateFunction<byte[], HllUsers.Acc> {
    @Override
    public HllUsers.Acc createAccumulator() {
      return new HllUsers.Acc();
    }

    public void accumulate(HllUsers.Acc acc, byte[] sketch) {
      if (sketch != null) {
        HllUsers.mergeInto(acc, decode(sketch));
      }
    }

    public void merge(HllUsers.Acc acc, Iterable<HllUsers.Acc> others) {
      for (HllUsers.Acc other : others) {
        HllUsers.mergeInto(acc, other);
      }
    }

    @Override
    public byte[] getValue(HllUsers.Acc acc) {
      return encode(acc);
    }
  }

  /** {@code hll_estimate(sketch)}: distinct users, as {@code hll_users} estimates them. */
  public static final class Estimate extends ScalarFunction {
    public Long eval(byte[] sketch) {
      return sketch == null ? null : HllUsers.estimate(decode(sketch));
    }
  }

  /**
   * Checks, in this JVM, that sketches of parts merged with {@code hll_merge} estimate what
   * {@code hll_users} estimates over all the users, for sets from 1 to 10^6 users cut into 1 to
   * 60 parts (sparse, dense and mixed). Returns the number of mismatches.
   */
  static int selfCheck() {
    HllUsers users = new HllUsers();
    Sketch sketch = new Sketch();
    Merge merge = new Merge();
    int mismatches = 0;
    long seed = 7;
    for (int size : new int[] {0, 1, 10, 300, 511, 512, 513, 2_000, 50_000, 1_000_000}) {
      for (int parts : new int[] {1, 3, 60}) {
        HllUsers.Acc whole = users.createAccumulator();
        HllUsers.Acc[] partial = new HllUsers.Acc[parts];
        for (int p = 0; p < parts; p++) {
          partial[p] = sketch.createAccumulator();
        }
        for (int i = 0; i < size; i++) {
          long user = ClickGen.mix64(seed++) % 1_000_000;
          users.accumulate(whole, user);
          // uneven parts: a quarter of the users more in part 0, so sparse and dense parts meet
          long h = ClickGen.mix64(user ^ 0x5bd1e995L);
          int p = (h & 3) == 0 ? 0 : (int) Long.remainderUnsigned(h >>> 2, parts);
          sketch.accumulate(partial[p], user);
        }
        HllUsers.Acc merged = merge.createAccumulator();
        for (HllUsers.Acc part : partial) {
          merge.accumulate(merged, sketch.getValue(part));
        }
        if (new Estimate().eval(merge.getValue(merged)) != users.getValue(whole).longValue()) {
          mismatches++;
        }
      }
    }
    return mismatches;
  }
}
