package tally.bench.flink.fold;

import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.LongAdder;

import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;

/**
 * Drops every row after adding it to per-(window size, key type) totals of rows and clicks kept
 * in this JVM, so that a run shows the job did its work.
 */
public final class RowCounter implements Sink<Row> {
  private static final long serialVersionUID = 1L;

  /** "size key type" to {rows, clicks}. */
  private static final Map<String, LongAdder[]> TOTALS = new ConcurrentHashMap<>();

  /** Totals so far, sorted by "size key type": {rows, clicks}. */
  public static Map<String, long[]> totals() {
    Map<String, long[]> out = new TreeMap<>();
    TOTALS.forEach((key, adders) -> out.put(key, new long[] {adders[0].sum(), adders[1].sum()}));
    return out;
  }

  @Override
  public SinkWriter<Row> createWriter(WriterInitContext context) {
    return new SinkWriter<>() {
      @Override
      public void write(Row row, Context context) {
        LongAdder[] adders = TOTALS.computeIfAbsent(row.size + " " + row.keyType, k -> new LongAdder[] {new LongAdder(), new LongAdder()});
        adders[0].increment();
        adders[1].add(row.clicks);
      }

      @Override
      public void flush(boolean endOfInput) {}

      @Override
      public void close() {}
    };
  }
}
