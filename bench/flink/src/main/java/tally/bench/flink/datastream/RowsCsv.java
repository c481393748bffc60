package tally.bench.flink.datastream;

import java.io.BufferedWriter;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.atomic.LongAdder;

import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;

import tally.bench.flink.fold.Row;

/**
 * Writes every final row to one CSV file, as {@code bench/batch/peers.py} writes its peers' rows:
 * header {@code key_type,key,granularity,window_start,clicks,distinct_users}, window start in
 * epoch ms. Run at parallelism 1 (one writer, one file); the file is written when the job ends.
 */
public final class RowsCsv implements Sink<Row> {
  private static final long serialVersionUID = 1L;

  /** Rows written in this JVM. */
  public static final LongAdder WRITTEN = new LongAdder();

  private final String path;

  public RowsCsv(Path path) {
    this.path = path.toAbsolutePath().toString();
  }

  @Override
  public SinkWriter<Row> createWriter(WriterInitContext context) throws IOException {
    BufferedWriter out = Files.newBufferedWriter(Path.of(path), StandardCharsets.UTF_8);
    out.write("key_type,key,granularity,window_start,clicks,distinct_users\n");
    return new SinkWriter<>() {
      @Override
      public void write(Row row, Context context) throws IOException {
        out.write(row.keyType);
        out.write(',');
        out.write(quoted(row.key));
        out.write(',');
        out.write(row.size);
        out.write(',');
        out.write(Long.toString(row.windowStart));
        out.write(',');
        out.write(Long.toString(row.clicks));
        out.write(',');
        out.write(Long.toString(row.distinctUsers));
        out.write('\n');
        WRITTEN.increment();
      }

      @Override
      public void flush(boolean endOfInput) throws IOException {
        out.flush();
      }

      @Override
      public void close() throws IOException {
        out.close();
      }
    };
  }

  /** A CSV field: quoted when it holds a comma, quote or line break. */
  private static String quoted(String field) {
    for (int i = 0; i < field.length(); i++) {
      char c = field.charAt(i);
      if (c == ',' || c == '"' || c == '\n' || c == '\r') {
        return '"' + field.replace("\"", "\"\"") + '"';
      }
    }
    return field;
  }
}
