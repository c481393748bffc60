package tally.bench.flink;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.Map;

import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;

/** What every job of this bench sets up alike: exactly-once checkpoints and the local environment. */
public final class LocalJob {
  private LocalJob() {}

  /**
   * Adds exactly-once checkpoints every {@code interval} (hashmap state backend, filesystem
   * storage in {@code dir}) to {@code options}. Without a {@code dir}, a temporary one named
   * {@code prefix…} is made and returned, for the caller to delete after the run; else null.
   */
  public static Path checkpointing(Map<String, String> options, String interval, String dir, String prefix) throws IOException {
    Path temporary = dir == null ? Files.createTempDirectory(prefix) : null;
    Path where = temporary != null ? temporary : Path.of(dir);
    options.put("execution.checkpointing.interval", interval);
    options.put("execution.checkpointing.mode", "EXACTLY_ONCE");
    options.put("state.backend.type", "hashmap");
    options.put("execution.checkpointing.storage", "filesystem");
    options.put("execution.checkpointing.dir", where.toAbsolutePath().toUri().toString());
    return temporary;
  }

  /** A local environment of {@code parallelism} with every option set. */
  public static StreamExecutionEnvironment environment(int parallelism, Map<String, String> options) {
    Configuration conf = new Configuration();
    options.forEach((key, value) -> conf.set(ConfigOptions.key(key).stringType().noDefaultValue(), value));
    return StreamExecutionEnvironment.createLocalEnvironment(parallelism, conf);
  }

  /** Deletes a directory and everything in it. */
  public static void deleteTree(Path root) throws IOException {
    try (var paths = Files.walk(root)) {
      paths.sorted(Comparator.reverseOrder()).forEach(path -> path.toFile().delete());
    }
  }
}
