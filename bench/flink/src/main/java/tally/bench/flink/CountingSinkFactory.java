package tally.bench.flink;

import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.LongAdder;

import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.table.connector.ChangelogMode;
import org.apache.flink.table.connector.sink.DynamicTableSink;
import org.apache.flink.table.connector.sink.SinkV2Provider;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.factories.DynamicTableSinkFactory;
import org.apache.flink.table.factories.FactoryUtil;

/**
 * The {@code 'connector' = 'tally-count'} sink for {@code window_rows}: drops every row like the
 * blackhole sink, after adding it to per-(window size, key type) totals of rows and clicks kept
 * in this JVM, so a run can check that the job did its work. Insert-only rows only.
 */
public final class CountingSinkFactory implements DynamicTableSinkFactory {
  public static final String IDENTIFIER = "tally-count";

  /** "size/key type" to {rows, clicks}. */
  private static final Map<String, LongAdder[]> TOTALS = new ConcurrentHashMap<>();

  /** Totals so far, sorted by "size/key type": {rows, clicks}. */
  public static Map<String, long[]> totals() {
    Map<String, long[]> out = new TreeMap<>();
    TOTALS.forEach((key, adders) -> out.put(key, new long[] {adders[0].sum(), adders[1].sum()}));
    return out;
  }

  @Override
  public String factoryIdentifier() {
    return IDENTIFIER;
  }

  @Override
  public Set<ConfigOption<?>> requiredOptions() {
    return Set.of();
  }

  @Override
  public Set<ConfigOption<?>> optionalOptions() {
    return Set.of();
  }

  @Override
  public DynamicTableSink createDynamicTableSink(Context context) {
    FactoryUtil.createTableFactoryHelper(this, context).validate();
    return new Table();
  }

  private static final class Table implements DynamicTableSink {
    @Override
    public ChangelogMode getChangelogMode(ChangelogMode requested) {
      return ChangelogMode.insertOnly();
    }

    @Override
    public SinkRuntimeProvider getSinkRuntimeProvider(Context context) {
      return SinkV2Provider.of(new CountingSink());
    }

    @Override
    public DynamicTableSink copy() {
      return new Table();
    }

    @Override
    public String asSummaryString() {
      return "counting sink";
    }
  }

  /** Columns: window_size, key_type, key_id, window_start, window_end, clicks, ... */
  private static final class CountingSink implements Sink<RowData> {
    private static final long serialVersionUID = 1L;

    @Override
    public SinkWriter<RowData> createWriter(WriterInitContext context) {
      return new SinkWriter<>() {
        @Override
        public void write(RowData row, Context context) {
          String key = row.getString(0) + "/" + row.getString(1);
          LongAdder[] adders = TOTALS.computeIfAbsent(key, k -> new LongAdder[] {new LongAdder(), new LongAdder()});
          adders[0].increment();
          adders[1].add(row.getLong(5));
        }

        @Override
        public void flush(boolean endOfInput) {}

        @Override
        public void close() {}
      };
    }
  }
}
