package tally.bench.flink.datastream;

import java.time.Duration;

import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.functions.RichFilterFunction;
import org.apache.flink.api.common.state.StateTtlConfig;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.functions.KeySelector;

import tally.bench.flink.ClickGen;
import tally.bench.flink.fold.Click;
import tally.bench.flink.fold.FoldStats;

/**
 * The usual Flink dedup, after {@code keyBy(request id)}: a {@code ValueState<Boolean>} per
 * request id, set by the first copy, with a state TTL of the dedup horizon; a later copy finds it
 * set and is dropped. Flink's state TTL counts processing time (tally's horizon is event time);
 * expired ids are dropped from the heap state incrementally as state is accessed, and from full
 * snapshots.
 */
public final class KeyedDedup extends RichFilterFunction<Click> {
  private static final long serialVersionUID = 1L;

  private final long horizonMs;
  private final int cleanupPerAccess;
  private transient ValueState<Boolean> seen;
  private transient long duplicates;

  /**
   * Remembers ids for {@code horizonMs}; every state access checks {@code cleanupPerAccess}
   * entries for expiry (Flink's default is 5; 0: no background cleanup, expired ids are only left
   * out of full snapshots and dropped when read).
   */
  public KeyedDedup(long horizonMs, int cleanupPerAccess) {
    if (horizonMs < 1 || cleanupPerAccess < 0) {
      throw new IllegalArgumentException("horizon >= 1, cleanup >= 0");
    }
    this.horizonMs = horizonMs;
    this.cleanupPerAccess = cleanupPerAccess;
  }

  @Override
  public void open(OpenContext context) {
    ValueStateDescriptor<Boolean> descriptor = new ValueStateDescriptor<>("seen", Types.BOOLEAN);
    StateTtlConfig.Builder ttl =
        StateTtlConfig.newBuilder(Duration.ofMillis(horizonMs))
            .setUpdateType(StateTtlConfig.UpdateType.OnCreateAndWrite)
            .setStateVisibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
            .cleanupFullSnapshot();
    if (cleanupPerAccess == 0) {
      ttl.disableCleanupInBackground();
    } else {
      ttl.cleanupIncrementally(cleanupPerAccess, false);
    }
    descriptor.enableTimeToLive(ttl.build());
    seen = getRuntimeContext().getState(descriptor);
  }

  @Override
  public boolean filter(Click click) throws Exception {
    if (seen.value() != null) {
      duplicates++;
      return false;
    }
    seen.update(Boolean.TRUE);
    return true;
  }

  @Override
  public void close() throws Exception {
    FoldStats.DUPLICATES.add(duplicates);
    duplicates = 0;
    super.close();
  }

  /** A request id as a key: both halves, hashed once more so key groups spread evenly. */
  public static final class RequestId {
    public long hi;
    public long lo;

    public RequestId() {}

    RequestId(long hi, long lo) {
      this.hi = hi;
      this.lo = lo;
    }

    @Override
    public int hashCode() {
      return (int) ClickGen.mix64(hi ^ Long.rotateLeft(lo, 32));
    }

    @Override
    public boolean equals(Object o) {
      return o instanceof RequestId other && other.hi == hi && other.lo == lo;
    }
  }

  /** {@code keyBy} a click's request id; a new key object per click (the state keeps it). */
  public static final class ByRequestId implements KeySelector<Click, RequestId> {
    private static final long serialVersionUID = 1L;

    @Override
    public RequestId getKey(Click click) {
      return new RequestId(click.idHi, click.idLo);
    }
  }
}
