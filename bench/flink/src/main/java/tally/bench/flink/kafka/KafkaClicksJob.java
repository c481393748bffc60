package tally.bench.flink.kafka;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.TimeUnit;

import org.apache.flink.api.common.JobExecutionResult;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.connector.kafka.source.KafkaSource;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.TopicPartition;

import tally.bench.flink.JvmStats;
import tally.bench.flink.LocalJob;
import tally.bench.flink.fold.Click;
import tally.bench.flink.fold.FoldOperator;
import tally.bench.flink.fold.FoldStats;
import tally.bench.flink.fold.Partial;
import tally.bench.flink.fold.PartialKey;
import tally.bench.flink.fold.RollUp;
import tally.bench.flink.fold.RowCounter;

/**
 * tally's clicks job in the Flink DataStream API over a Kafka topic, as an expert would write it
 * for throughput: the topic is read to the end offsets found at start (bounded), with event-time
 * watermarks per Kafka partition (bounded out-of-orderness = tally's watermark slack); retries
 * are dropped inside the source task (the topic is partitioned by request id, so a request's
 * copies share a partition); every click is folded once, in the source task, into its (ad,
 * minute) partial; the shuffle carries partials, and the roll-up merges them into 1m, 5m and 1h
 * windows per ad, campaign and advertiser, clicks and HyperLogLog distinct users.
 *
 * <pre>
 * --bootstrap HOSTS          default 127.0.0.1:9092
 * --topic T                  default raw_clicks
 * --parallelism P            default 2 (source readers, folds and roll-ups alike)
 * --mode core|checkpointed   checkpointed: exactly-once checkpoints, hashmap state backend
 * --checkpoint-interval D    checkpointed: default 2 s
 * --checkpoint-dir DIR       checkpointed: default a temporary directory, deleted after
 * --slack-ms MS              watermark slack, default 5000 (jobs/clicks.toml)
 * --horizon-ms MS            dedup horizon, default 60000
 * --windows 1m,5m,1h         window sizes, default all three; must include 1m
 * --lag-every-ms MS          consumer lag sample interval, default 1000
 * --set KEY=VALUE            any Flink option, repeatable (applied last)
 * --check                    check the row totals against the clicks read
 * </pre>
 *
 * <p>Prints {@code flink ...: value} lines on stdout, as {@code ClicksJob} does, plus the
 * topic's record count and the consumer lag sampled over the run.
 */
public final class KafkaClicksJob {
  private KafkaClicksJob() {}

  private static final Map<String, Long> SIZES = Map.of("1m", 60_000L, "5m", 300_000L, "1h", 3_600_000L);

  public static void main(String[] args) throws Exception {
    String bootstrap = "127.0.0.1:9092";
    String topic = "raw_clicks";
    int parallelism = 2;
    String mode = "core";
    String checkpointInterval = "2 s";
    String checkpointDir = null;
    long slackMs = 5_000;
    long horizonMs = 60_000;
    List<String> windows = List.of("1m", "5m", "1h");
    long lagEveryMs = 1_000;
    boolean check = false;
    Map<String, String> extra = new LinkedHashMap<>();
    for (int i = 0; i < args.length; i++) {
      String arg = args[i];
      switch (arg) {
        case "--bootstrap" -> bootstrap = value(args, ++i, arg);
        case "--topic" -> topic = value(args, ++i, arg);
        case "--parallelism" -> parallelism = Integer.parseInt(value(args, ++i, arg));
        case "--mode" -> mode = value(args, ++i, arg);
        case "--checkpoint-interval" -> checkpointInterval = value(args, ++i, arg);
        case "--checkpoint-dir" -> checkpointDir = value(args, ++i, arg);
        case "--slack-ms" -> slackMs = Long.parseLong(value(args, ++i, arg));
        case "--horizon-ms" -> horizonMs = Long.parseLong(value(args, ++i, arg));
        case "--windows" -> windows = List.of(value(args, ++i, arg).split(","));
        case "--lag-every-ms" -> lagEveryMs = Long.parseLong(value(args, ++i, arg));
        case "--set" -> {
          String kv = value(args, ++i, arg);
          int eq = kv.indexOf('=');
          if (eq <= 0) {
            throw usage("--set takes KEY=VALUE, got " + kv);
          }
          extra.put(kv.substring(0, eq), kv.substring(eq + 1));
        }
        case "--check" -> check = true;
        default -> throw usage("unknown argument " + arg);
      }
    }
    if (!List.of("core", "checkpointed").contains(mode)) {
      throw usage("--mode must be core or checkpointed, got " + mode);
    }
    if (!windows.contains("1m") || !SIZES.keySet().containsAll(windows)) {
      throw usage("--windows takes a comma-separated list of " + SIZES.keySet() + " with 1m, got " + windows);
    }
    if (parallelism < 1 || slackMs < 0 || horizonMs < 1 || lagEveryMs < 1) {
      throw usage("--parallelism, --horizon-ms and --lag-every-ms must be at least 1, --slack-ms at least 0");
    }

    Map<String, String> options = new LinkedHashMap<>();
    options.put("execution.runtime-mode", "STREAMING");
    options.put("parallelism.default", Integer.toString(parallelism));
    // Records handed between chained operators are not copied: the fold keeps nothing of a click.
    options.put("pipeline.object-reuse", "true");
    Path tempCheckpoints = mode.equals("checkpointed")
        ? LocalJob.checkpointing(options, checkpointInterval, checkpointDir, "flink-kafka-checkpoints-")
        : null;
    options.putAll(extra);
    StreamExecutionEnvironment env = LocalJob.environment(parallelism, options);

    Topic offsets = Topic.read(bootstrap, topic);
    System.out.println("flink topic: " + topic + ", " + offsets.partitions() + " partitions, " + offsets.records() + " records");

    long[] sizesMs = windows.stream().mapToLong(SIZES::get).toArray();
    KafkaSource<Click> source =
        KafkaSource.<Click>builder()
            .setBootstrapServers(bootstrap)
            .setTopics(topic)
            .setGroupId("tally-bench-flink")
            .setStartingOffsets(OffsetsInitializer.earliest())
            .setBounded(OffsetsInitializer.latest())
            .setDeserializer(new ClickDecoder())
            // As tally's source reads: committed records only.
            .setProperty("isolation.level", "read_committed")
            .setProperty("max.poll.records", "2000")
            .build();
    WatermarkStrategy<Click> watermarks =
        WatermarkStrategy.<Click>forBoundedOutOfOrderness(Duration.ofMillis(slackMs)).withTimestampAssigner((click, ts) -> click.ts);
    env.fromSource(source, watermarks, "kafka " + topic)
        .transform("dedup and fold per (ad, minute)", TypeInformation.of(Partial.class), new FoldOperator(horizonMs))
        .keyBy(new PartialKey(), Types.STRING)
        .process(new RollUp(sizesMs, windows.toArray(new String[0])))
        .name("roll up 1m, 5m, 1h")
        .sinkTo(new RowCounter())
        .name("count rows");

    JvmStats.TaskCpu taskCpu = new JvmStats.TaskCpu();
    taskCpu.start();
    long cpuBefore = JvmStats.processCpuNanos();
    long busyBefore = JvmStats.machineBusyJiffies();
    long wallStart = System.nanoTime();
    JobExecutionResult job;
    List<String> lag = new ArrayList<>();
    try {
      JobClient client = env.executeAsync("tally clicks over Kafka");
      var result = client.getJobExecutionResult();
      while (!result.isDone()) {
        lag.add(String.format("%.1f:%d", (System.nanoTime() - wallStart) / 1e9, offsets.lag()));
        try {
          result.get(lagEveryMs, TimeUnit.MILLISECONDS);
        } catch (java.util.concurrent.TimeoutException e) {
          // next sample
        }
      }
      job = result.get();
    } finally {
      if (tempCheckpoints != null) {
        LocalJob.deleteTree(tempCheckpoints);
      }
    }
    long end = System.nanoTime();
    lag.add(String.format("%.1f:%d", (end - wallStart) / 1e9, offsets.lag()));
    double wall = (end - wallStart) / 1e9;
    double processing = (end - Counters.FIRST_RECORD_NANOS.get()) / 1e9;
    double cpu = (JvmStats.processCpuNanos() - cpuBefore) / 1e9;
    long busyAfter = JvmStats.machineBusyJiffies();
    double otherLoad = busyBefore < 0 || busyAfter < 0 ? -1 : Math.max(0, ((busyAfter - busyBefore) / 100.0 - cpu) / wall);
    double tasks = taskCpu.finish();
    double runtime = job.getNetRuntime(TimeUnit.MILLISECONDS) / 1e3;
    long records = Counters.RECORDS.sum();

    System.out.println("flink version: " + org.apache.flink.runtime.util.EnvironmentInformation.getVersion());
    System.out.println("flink mode: kafka " + mode);
    System.out.println("flink parallelism: " + parallelism);
    System.out.println("flink job: kafka source (per-partition watermarks, slack " + slackMs + " ms), dedup in the source task (horizon "
        + horizonMs + " ms), fold per (ad, minute), roll-up to windows " + String.join(",", windows)
        + " per ad, campaign, advertiser, HLL distinct users");
    System.out.println("flink clicks: " + records);
    System.out.printf("flink elapsed s: %.3f%n", runtime);
    System.out.printf("flink startup s: %.3f%n", wall - runtime);
    System.out.printf("flink events/s: %.0f%n", records / runtime);
    System.out.printf("flink events/s incl. startup: %.0f%n", records / wall);
    System.out.printf("flink processing s: %.3f%n", processing);
    System.out.printf("flink events/s processing: %.0f%n", records / processing);
    System.out.printf("flink cpu s: %.2f%n", cpu);
    System.out.printf("flink task cpu s: %.2f%n", tasks);
    System.out.printf("flink events per task cpu s: %.0f%n", records / tasks);
    System.out.printf("flink gc s: %.2f%n", JvmStats.gcSeconds());
    if (mode.equals("checkpointed")) {
      System.out.println("flink checkpoints completed: " + FoldStats.CHECKPOINTS.get());
    }
    System.out.println("flink peak rss mib: " + JvmStats.peakRssMib());
    System.out.printf("flink other load cores: %.2f%n", otherLoad);
    System.out.println("flink lag samples (s:records): " + String.join(" ", lag));
    boolean ok = report(records, offsets.records(), windows, check);
    System.out.flush();
    if (!ok) {
      System.exit(1);
    }
  }

  /**
   * Prints the row totals; with {@code check}, requires every record of the topic to be read and
   * every click counted once per window size and key type: read − refused − retries − too late.
   */
  private static boolean report(long records, long inTopic, List<String> windows, boolean check) {
    long rejected = Counters.REJECTED.sum();
    long duplicates = FoldStats.DUPLICATES.sum();
    long tooLate = FoldStats.TOO_LATE.sum();
    long counted = records - rejected - duplicates - tooLate;
    System.out.println("flink read: " + records + " (refused " + rejected + ", retries " + duplicates + ", too late " + tooLate + ")");
    Map<String, long[]> totals = RowCounter.totals();
    boolean ok = records == inTopic;
    for (String window : windows) {
      for (String keyType : List.of("ad", "campaign", "advertiser")) {
        long[] total = totals.getOrDefault(window + " " + keyType, new long[2]);
        System.out.println("flink rows " + window + " " + keyType + ": " + total[0] + " rows, " + total[1] + " clicks");
        ok &= total[1] == counted;
      }
    }
    if (check) {
      System.out.println("flink check: " + (ok ? "ok" : "FAILED (expected " + inTopic + " records read and " + counted
          + " clicks per window size and key type)"));
    }
    return ok || !check;
  }

  /** The topic's partitions with their earliest and latest offsets at start, for lag samples. */
  private record Topic(long[] earliest, long[] latest) {
    static Topic read(String bootstrap, String topic) throws Exception {
      Properties props = new Properties();
      props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
      try (Admin admin = Admin.create(props)) {
        TopicDescription description = admin.describeTopics(List.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS).get(topic);
        int n = description.partitions().size();
        Map<TopicPartition, OffsetSpec> first = new LinkedHashMap<>();
        Map<TopicPartition, OffsetSpec> last = new LinkedHashMap<>();
        for (int p = 0; p < n; p++) {
          first.put(new TopicPartition(topic, p), OffsetSpec.earliest());
          last.put(new TopicPartition(topic, p), OffsetSpec.latest());
        }
        var earliest = admin.listOffsets(first).all().get(30, TimeUnit.SECONDS);
        var latest = admin.listOffsets(last).all().get(30, TimeUnit.SECONDS);
        long[] e = new long[n];
        long[] l = new long[n];
        for (int p = 0; p < n; p++) {
          e[p] = earliest.get(new TopicPartition(topic, p)).offset();
          l[p] = latest.get(new TopicPartition(topic, p)).offset();
        }
        return new Topic(e, l);
      }
    }

    int partitions() {
      return latest.length;
    }

    long records() {
      long sum = 0;
      for (int p = 0; p < latest.length; p++) {
        sum += latest[p] - earliest[p];
      }
      return sum;
    }

    /** Records between each partition's next offset to read and its end offset at start. */
    long lag() {
      long sum = 0;
      for (int p = 0; p < latest.length; p++) {
        long next = p < Counters.MAX_PARTITIONS ? Counters.NEXT_OFFSET.get(p) : -1;
        sum += Math.max(0, latest[p] - Math.max(next, earliest[p]));
      }
      return sum;
    }
  }

  private static String value(String[] args, int i, String flag) {
    if (i >= args.length) {
      throw usage(flag + " needs a value");
    }
    return args[i];
  }

  private static IllegalArgumentException usage(String message) {
    return new IllegalArgumentException(
        message
            + "\nusage: KafkaClicksJob [--bootstrap HOSTS] [--topic T] [--parallelism P] [--mode core|checkpointed]"
            + " [--checkpoint-interval D] [--checkpoint-dir DIR] [--slack-ms MS] [--horizon-ms MS] [--windows 1m,5m,1h]"
            + " [--lag-every-ms MS] [--set KEY=VALUE]... [--check]");
  }
}
