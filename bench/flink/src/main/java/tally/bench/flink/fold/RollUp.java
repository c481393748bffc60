package tally.bench.flink.fold;

import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.MapState;
import org.apache.flink.api.common.state.MapStateDescriptor;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.util.Collector;

import tally.bench.flink.HllUsers;

/**
 * Keyed by "key type/key": merges the minute partials of every source subtask into the key's
 * open windows of each size (a 1m partial lands in its 1m, 5m and 1h window: the larger windows
 * roll up from minutes, never from clicks), and emits a window's row when the watermark passes
 * its end. Windows are entries of one map state, keyed by start and size; one event-time timer
 * per window end.
 */
public final class RollUp extends KeyedProcessFunction<String, Partial, Row> {
  private static final long serialVersionUID = 1L;
  /** Window sizes per job, at most this many (a size's index lives in a state key's low bits). */
  static final int MAX_SIZES = 8;

  private final long[] sizesMs;
  private final String[] sizeNames;
  private transient MapState<Long, Window> windows;
  private transient Estimate estimate;

  /** An open window's clicks and users so far. A Flink POJO (state). */
  public static final class Window {
    public long clicks;
    public HllUsers.Acc users;

    public Window() {}
  }

  public RollUp(long[] sizesMs, String[] sizeNames) {
    if (sizesMs.length == 0 || sizesMs.length > MAX_SIZES || sizeNames.length != sizesMs.length) {
      throw new IllegalArgumentException("1.." + MAX_SIZES + " window sizes, each with a name");
    }
    this.sizesMs = sizesMs.clone();
    this.sizeNames = sizeNames.clone();
  }

  @Override
  public void open(OpenContext context) {
    TypeInformation<Window> type = TypeInformation.of(Window.class);
    windows = getRuntimeContext().getMapState(new MapStateDescriptor<>("windows", Types.LONG, type));
    estimate = new Estimate();
  }

  private static long stateKey(long start, int size) {
    return start * MAX_SIZES + size;
  }

  @Override
  public void processElement(Partial partial, Context context, Collector<Row> out) throws Exception {
    for (int i = 0; i < sizesMs.length; i++) {
      long start = Math.floorDiv(partial.minute, sizesMs[i]) * sizesMs[i];
      long key = stateKey(start, i);
      Window window = windows.get(key);
      if (window == null) {
        window = new Window();
        window.users = new HllUsers.Acc();
        context.timerService().registerEventTimeTimer(start + sizesMs[i] - 1);
      }
      window.clicks += partial.clicks;
      HllUsers.mergeInto(window.users, partial.users);
      windows.put(key, window);
    }
  }

  @Override
  public void onTimer(long timestamp, OnTimerContext context, Collector<Row> out) throws Exception {
    String current = context.getCurrentKey();
    int slash = current.indexOf('/');
    String keyType = current.substring(0, slash);
    String key = current.substring(slash + 1);
    for (int i = 0; i < sizesMs.length; i++) {
      long start = timestamp + 1 - sizesMs[i];
      if (Math.floorMod(start, sizesMs[i]) != 0) {
        continue;
      }
      long stateKey = stateKey(start, i);
      Window window = windows.get(stateKey);
      if (window != null) {
        out.collect(new Row(sizeNames[i], keyType, key, start, window.clicks, estimate.of(window.users)));
        windows.remove(stateKey);
      }
    }
  }
}
