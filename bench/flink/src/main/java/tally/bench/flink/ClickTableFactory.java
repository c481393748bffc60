package tally.bench.flink;

import java.util.Set;

import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.configuration.ReadableConfig;
import org.apache.flink.table.connector.ChangelogMode;
import org.apache.flink.table.connector.source.DynamicTableSource;
import org.apache.flink.table.connector.source.ScanTableSource;
import org.apache.flink.table.connector.source.SourceProvider;
import org.apache.flink.table.factories.DynamicTableSourceFactory;
import org.apache.flink.table.factories.FactoryUtil;

/**
 * The {@code 'connector' = 'tally-clicks'} table source: {@link ClickSource} for SQL. The table
 * declares the physical columns {@code ad_id STRING, ts BIGINT, user_id BIGINT, request_id
 * BINARY(16)} in this order; computed columns and the watermark are declared in SQL.
 */
public final class ClickTableFactory implements DynamicTableSourceFactory {
  public static final String IDENTIFIER = "tally-clicks";

  public static final ConfigOption<Long> CLICKS = ConfigOptions.key("clicks").longType().noDefaultValue();
  public static final ConfigOption<Long> RATE_PER_S = ConfigOptions.key("rate-per-s").longType().defaultValue(1_000_000L);
  public static final ConfigOption<Long> SEED = ConfigOptions.key("seed").longType().defaultValue(1L);

  @Override
  public String factoryIdentifier() {
    return IDENTIFIER;
  }

  @Override
  public Set<ConfigOption<?>> requiredOptions() {
    return Set.of(CLICKS);
  }

  @Override
  public Set<ConfigOption<?>> optionalOptions() {
    return Set.of(RATE_PER_S, SEED);
  }

  @Override
  public DynamicTableSource createDynamicTableSource(Context context) {
    FactoryUtil.TableFactoryHelper helper = FactoryUtil.createTableFactoryHelper(this, context);
    helper.validate();
    ReadableConfig options = helper.getOptions();
    return new Table(ClickGen.withDefaults(options.get(SEED), options.get(CLICKS), options.get(RATE_PER_S)));
  }

  private static final class Table implements ScanTableSource {
    private final ClickGen gen;

    Table(ClickGen gen) {
      this.gen = gen;
    }

    @Override
    public ChangelogMode getChangelogMode() {
      return ChangelogMode.insertOnly();
    }

    @Override
    public ScanRuntimeProvider getScanRuntimeProvider(ScanContext context) {
      return SourceProvider.of(new ClickSource(gen));
    }

    @Override
    public DynamicTableSource copy() {
      return new Table(gen);
    }

    @Override
    public String asSummaryString() {
      return "generated clicks";
    }
  }
}
