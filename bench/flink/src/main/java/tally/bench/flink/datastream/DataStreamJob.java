package tally.bench.flink.datastream;

import java.io.BufferedReader;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import org.apache.flink.api.common.JobExecutionResult;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;

import tally.bench.flink.ClickGen;
import tally.bench.flink.JvmStats;
import tally.bench.flink.LocalJob;
import tally.bench.flink.fold.Click;
import tally.bench.flink.fold.ClickType;
import tally.bench.flink.fold.FoldOperator;
import tally.bench.flink.fold.FoldStats;
import tally.bench.flink.fold.Partial;
import tally.bench.flink.fold.PartialKey;
import tally.bench.flink.fold.RollUp;
import tally.bench.flink.fold.Row;
import tally.bench.flink.fold.RowCounter;

/**
 * tally's clicks job in the Flink DataStream API, written for throughput: the SQL job's generated
 * clicks (or an NDJSON click file), retries dropped by request id, each remaining click folded
 * once into its (ad, minute) partial with a HyperLogLog sketch of users in the source task, the
 * partials shuffled by key and rolled up into 1m, 5m and 1h windows per ad, campaign and
 * advertiser, with clicks and distinct users.
 *
 * <pre>
 * --mode core|checkpointed    default core; checkpointed: exactly-once checkpoints, hashmap state
 * --dedup split|keyed         split (default): in the source task, per split (RequestIds, an
 *                             event-time horizon); keyed: keyBy(request id) and a ValueState with
 *                             a state TTL of the horizon, before the fold
 * --clicks N                  default 5000000 (generated clicks)
 * --rate-per-s R              event-time rate of the generated clicks, default 1000000
 * --seed N                    default 1
 * --parallelism P             default 2
 * --slack-ms MS               watermark slack (bounded out-of-orderness), default 5000; in file
 *                             mode, given, it turns watermarks on (late clicks are then dropped)
 * --horizon-ms MS             dedup horizon, default 60000
 * --checkpoint-interval D     checkpointed: default 2 s
 * --checkpoint-dir DIR        checkpointed: default a temporary directory, deleted after
 * --set KEY=VALUE             any Flink option, repeatable (applied last)
 * --check                     count the rows and check the totals against the clicks generated
 * --input CLICKS.ndjson       read clicks from this file instead of generating them (file mode)
 * --catalog ADS.csv           file mode: ad_id,campaign_id,advertiser_id (default: the generated
 *                             catalog of tally gen's defaults)
 * --rows-out OUT.csv          write every final row to this CSV file (parallelism 1)
 * --serializer tuned|pojo     clicks crossing the network (keyed dedup): ClickType (default),
 *                             or Flink's POJO serializer
 * --ttl-cleanup N             keyed dedup: ids checked for expiry per state access, default 1
 *                             (Flink's default 5); 0: no background cleanup
 * --break-dedup               keep retries (to see the checks fail)
 * </pre>
 *
 * <p>In file mode the source emits no watermarks until the end of the file (its final watermark
 * then closes every window), so no click is dropped as late: tally counts every click of a
 * window in its latest row, late ones included, and so must the file mode to compare rows. With
 * {@code --slack-ms} it uses watermarks as with generated clicks, and drops the late clicks.
 *
 * <p>Prints {@code flink ...: value} lines as {@code ClicksJob} does.
 */
public final class DataStreamJob {
  private DataStreamJob() {}

  private static final List<String> SIZE_NAMES = List.of("1m", "5m", "1h");
  private static final long[] SIZES_MS = {60_000, 300_000, 3_600_000};

  public static void main(String[] args) throws Exception {
    String mode = "core";
    String dedup = "split";
    long clicks = 5_000_000;
    long rate = 1_000_000;
    long seed = 1;
    int parallelism = 2;
    long slackMs = 5_000;
    boolean slackGiven = false;
    long horizonMs = 60_000;
    String checkpointInterval = "2 s";
    String checkpointDir = null;
    boolean check = false;
    boolean breakDedup = false;
    boolean pojo = false;
    int ttlCleanup = 1;
    Path input = null;
    Path catalogPath = null;
    Path rowsOut = null;
    Map<String, String> extra = new LinkedHashMap<>();
    for (int i = 0; i < args.length; i++) {
      String arg = args[i];
      switch (arg) {
        case "--mode" -> mode = value(args, ++i, arg);
        case "--dedup" -> dedup = value(args, ++i, arg);
        case "--clicks" -> clicks = Long.parseLong(value(args, ++i, arg));
        case "--rate-per-s" -> rate = Long.parseLong(value(args, ++i, arg));
        case "--seed" -> seed = Long.parseLong(value(args, ++i, arg));
        case "--parallelism" -> parallelism = Integer.parseInt(value(args, ++i, arg));
        case "--slack-ms" -> {
          slackMs = Long.parseLong(value(args, ++i, arg));
          slackGiven = true;
        }
        case "--horizon-ms" -> horizonMs = Long.parseLong(value(args, ++i, arg));
        case "--checkpoint-interval" -> checkpointInterval = value(args, ++i, arg);
        case "--checkpoint-dir" -> checkpointDir = value(args, ++i, arg);
        case "--set" -> {
          String kv = value(args, ++i, arg);
          int eq = kv.indexOf('=');
          if (eq <= 0) {
            throw usage("--set takes KEY=VALUE, got " + kv);
          }
          extra.put(kv.substring(0, eq), kv.substring(eq + 1));
        }
        case "--check" -> check = true;
        case "--break-dedup" -> breakDedup = true;
        case "--ttl-cleanup" -> ttlCleanup = Integer.parseInt(value(args, ++i, arg));
        case "--serializer" -> pojo = switch (value(args, ++i, arg)) {
          case "pojo" -> true;
          case "tuned" -> false;
          default -> throw usage("--serializer takes tuned or pojo");
        };
        case "--input" -> input = Path.of(value(args, ++i, arg));
        case "--catalog" -> catalogPath = Path.of(value(args, ++i, arg));
        case "--rows-out" -> rowsOut = Path.of(value(args, ++i, arg));
        default -> throw usage("unknown argument " + arg);
      }
    }
    if (!List.of("core", "checkpointed").contains(mode)) {
      throw usage("--mode must be core or checkpointed, got " + mode);
    }
    if (!List.of("split", "keyed").contains(dedup)) {
      throw usage("--dedup must be split or keyed, got " + dedup);
    }
    if (clicks < 1 || rate < 1 || parallelism < 1 || slackMs < 0 || horizonMs < 1) {
      throw usage("--clicks, --rate-per-s, --parallelism and --horizon-ms must be at least 1, --slack-ms at least 0");
    }
    if (input != null && check) {
      throw usage("--check applies to generated clicks; in file mode compare the rows (--rows-out, peers.py check)");
    }
    if (input == null && catalogPath != null) {
      throw usage("--catalog applies to file mode (--input)");
    }
    boolean fileMode = input != null;

    Map<String, String> options = new LinkedHashMap<>();
    options.put("execution.runtime-mode", "STREAMING");
    options.put("parallelism.default", Integer.toString(parallelism));
    // Chained operators hand records on without a defensive copy: no operator keeps a record it
    // was given (the fold keeps counts and sketches, the roll-up copies into its state).
    options.put("pipeline.object-reuse", "true");
    Path tempCheckpoints = mode.equals("checkpointed")
        ? LocalJob.checkpointing(options, checkpointInterval, checkpointDir, "flink-datastream-checkpoints-")
        : null;
    options.putAll(extra);
    StreamExecutionEnvironment env = LocalJob.environment(parallelism, options);

    TypeInformation<Click> clickType = pojo ? TypeInformation.of(Click.class) : ClickType.INFO;
    DataStream<Click> source;
    boolean fileWatermarks = fileMode && slackGiven;
    WatermarkStrategy<Click> watermarks =
        WatermarkStrategy.<Click>forBoundedOutOfOrderness(Duration.ofMillis(slackMs)).withTimestampAssigner((click, ts) -> click.ts);
    if (fileMode) {
      // No watermarks until the end of the file: nothing is late, every click is counted.
      WatermarkStrategy<Click> none = WatermarkStrategy.<Click>noWatermarks().withTimestampAssigner((click, ts) -> click.ts);
      source = env.fromSource(new FileClicks(input), fileWatermarks ? watermarks : none, "clicks from " + input.getFileName(), clickType);
    } else {
      source = env.fromSource(new GeneratedClicks(ClickGen.withDefaults(seed, clicks, rate)), watermarks, "generated clicks", clickType);
    }
    Map<String, String[]> catalog = catalogPath == null ? null : readCatalog(catalogPath);
    long foldHorizon = dedup.equals("split") && !breakDedup ? horizonMs : 0;
    if (dedup.equals("keyed") && !breakDedup) {
      source = source.keyBy(new KeyedDedup.ByRequestId(), TypeInformation.of(KeyedDedup.RequestId.class))
          .filter(new KeyedDedup(horizonMs, ttlCleanup))
          .name("dedup by request id (keyed state, TTL)");
    }
    String foldName = foldHorizon > 0 ? "dedup in the split and fold per (ad, minute)" : "fold per (ad, minute)";
    DataStream<Row> rows = source
        .transform(foldName, TypeInformation.of(Partial.class), new FoldOperator(foldHorizon, catalog))
        .keyBy(new PartialKey(), Types.STRING)
        .process(new RollUp(SIZES_MS, SIZE_NAMES.toArray(new String[0])))
        .name("roll up 1m, 5m, 1h");
    if (rowsOut != null) {
      rows.sinkTo(new RowsCsv(rowsOut)).name("rows to " + rowsOut.getFileName()).setParallelism(1);
    } else {
      Sink<Row> counter = new RowCounter();
      rows.sinkTo(counter).name("count rows");
    }

    JvmStats.TaskCpu taskCpu = new JvmStats.TaskCpu();
    taskCpu.start();
    long cpuBefore = JvmStats.processCpuNanos();
    long busyBefore = JvmStats.machineBusyJiffies();
    long wallStart = System.nanoTime();
    JobExecutionResult job;
    try {
      job = env.execute("tally clicks, DataStream, dedup " + dedup);
    } finally {
      if (tempCheckpoints != null) {
        LocalJob.deleteTree(tempCheckpoints);
      }
    }
    long end = System.nanoTime();
    long firstClick = fileMode ? FileClicks.FIRST_CLICK_NANOS.get() : GeneratedClicks.FIRST_CLICK_NANOS.get();
    double wall = (end - wallStart) / 1e9;
    double processing = (end - firstClick) / 1e9;
    double cpu = (JvmStats.processCpuNanos() - cpuBefore) / 1e9;
    long busyAfter = JvmStats.machineBusyJiffies();
    double otherLoad = busyBefore < 0 || busyAfter < 0 ? -1 : Math.max(0, ((busyAfter - busyBefore) / 100.0 - cpu) / wall);
    double tasks = taskCpu.finish();
    double runtime = job.getNetRuntime(TimeUnit.MILLISECONDS) / 1e3;
    long events = fileMode ? FileClicks.KEPT.sum() : clicks;

    System.out.println("flink version: " + org.apache.flink.runtime.util.EnvironmentInformation.getVersion());
    System.out.println("flink mode: " + mode);
    System.out.println("flink parallelism: " + parallelism);
    System.out.println("flink job: DataStream, " + (fileMode ? "clicks from " + input
            + (fileWatermarks ? " (watermark slack " + slackMs + " ms)" : " (no watermarks until its end)")
            : "generated clicks (watermark slack " + slackMs + " ms)")
        + ", " + (breakDedup ? "NO dedup (--break-dedup)" : dedup.equals("split")
            ? "dedup in the source split (horizon " + horizonMs + " ms of event time)"
            : "dedup keyed by request id (state TTL " + horizonMs + " ms, " + ttlCleanup + " ids checked for expiry per access, clicks serialized by " + (pojo ? "Flink's POJO serializer" : "ClickType") + ")")
        + ", fold per (ad, minute), roll-up to windows 1m,5m,1h per ad, campaign, advertiser, HLL distinct users");
    if (!fileMode) {
      System.out.println("flink rate-per-s: " + rate);
    }
    System.out.println("flink clicks: " + events);
    System.out.printf("flink elapsed s: %.3f%n", runtime);
    System.out.printf("flink startup s: %.3f%n", wall - runtime);
    System.out.printf("flink events/s: %.0f%n", events / runtime);
    System.out.printf("flink events/s incl. startup: %.0f%n", events / wall);
    System.out.printf("flink processing s: %.3f%n", processing);
    System.out.printf("flink events/s processing: %.0f%n", events / processing);
    System.out.printf("flink cpu s: %.2f%n", cpu);
    System.out.printf("flink task cpu s: %.2f%n", tasks);
    System.out.printf("flink events per task cpu s: %.0f%n", events / tasks);
    System.out.printf("flink gc s: %.2f%n", JvmStats.gcSeconds());
    if (mode.equals("checkpointed")) {
      System.out.println("flink checkpoints completed: " + Math.max(FoldStats.CHECKPOINTS.get(), GeneratedClicks.LAST_COMPLETED_CHECKPOINT.get()));
    }
    System.out.println("flink peak rss mib: " + JvmStats.peakRssMib());
    System.out.printf("flink other load cores: %.2f%n", otherLoad);
    boolean ok = true;
    if (fileMode) {
      System.out.println("flink read: " + events + " clicks (refused lines " + FileClicks.REFUSED.sum() + ", retries dropped "
          + FoldStats.DUPLICATES.sum() + ", too late " + FoldStats.TOO_LATE.sum() + ")");
      if (rowsOut != null) {
        System.out.println("flink rows written: " + RowsCsv.WRITTEN.sum() + " to " + rowsOut);
      }
    } else {
      ok = report(check, !breakDedup);
    }
    System.out.flush();
    if (!ok) {
      System.exit(1);
    }
  }

  /**
   * Prints the generated and dropped clicks and the row totals; with {@code check}, requires for
   * every window size that each key type counted the same clicks, between the unique clicks less
   * the too-late ones and the unique clicks (as {@code ClicksJob}), and exactly the clicks neither
   * dropped as a retry nor as too late; and that the retries dropped are the retries generated.
   */
  private static boolean report(boolean check, boolean dedup) {
    long generated = GeneratedClicks.GENERATED.sum();
    long retries = GeneratedClicks.RETRIES.sum();
    long tooLate = GeneratedClicks.TOO_LATE.sum();
    long dropped = FoldStats.DUPLICATES.sum();
    long late = FoldStats.TOO_LATE.sum();
    long unique = generated - retries;
    System.out.println("flink generated: " + generated + " (retries " + retries + ", too late " + tooLate + ")");
    System.out.println("flink dropped: retries " + dropped + ", too late " + late);
    Map<String, long[]> totals = RowCounter.totals();
    boolean ok = generated > 0 && (!dedup || dropped == retries);
    for (String size : SIZE_NAMES) {
      for (String keyType : List.of("ad", "campaign", "advertiser")) {
        long[] total = totals.getOrDefault(size + " " + keyType, new long[2]);
        System.out.println("flink rows " + size + " " + keyType + ": " + total[0] + " rows, " + total[1] + " clicks");
        ok &= total[1] <= unique && total[1] >= unique - tooLate && total[1] == generated - dropped - late;
      }
    }
    if (!check) {
      return true;
    }
    System.out.println("flink check: " + (ok ? "ok" : "FAILED (expected " + (unique - tooLate) + ".." + unique
        + " clicks per window size and key type, " + (generated - dropped - late) + " exactly, and " + retries + " retries dropped)"));
    return ok;
  }

  /** A catalog CSV with header {@code ad_id,campaign_id,advertiser_id}: ad to {campaign, advertiser}. */
  static Map<String, String[]> readCatalog(Path path) throws IOException {
    Map<String, String[]> catalog = new HashMap<>();
    try (BufferedReader in = Files.newBufferedReader(path, StandardCharsets.UTF_8)) {
      String header = in.readLine();
      List<String> columns = header == null ? List.of() : fields(header);
      int ad = columns.indexOf("ad_id");
      int campaign = columns.indexOf("campaign_id");
      int advertiser = columns.indexOf("advertiser_id");
      if (ad < 0 || campaign < 0 || advertiser < 0) {
        throw new IOException(path + ": expected a header with ad_id, campaign_id and advertiser_id, got " + header);
      }
      for (String line = in.readLine(); line != null; line = in.readLine()) {
        if (line.isBlank()) {
          continue;
        }
        List<String> f = fields(line);
        catalog.put(f.get(ad), new String[] {f.get(campaign), f.get(advertiser)});
      }
    }
    return catalog;
  }

  /** The fields of a CSV line; a field may be quoted, with "" for a quote. */
  private static List<String> fields(String line) {
    List<String> out = new ArrayList<>();
    StringBuilder field = new StringBuilder();
    boolean quoted = false;
    for (int i = 0; i < line.length(); i++) {
      char c = line.charAt(i);
      if (quoted) {
        if (c == '"' && i + 1 < line.length() && line.charAt(i + 1) == '"') {
          field.append('"');
          i++;
        } else if (c == '"') {
          quoted = false;
        } else {
          field.append(c);
        }
      } else if (c == '"') {
        quoted = true;
      } else if (c == ',') {
        out.add(field.toString());
        field.setLength(0);
      } else if (c != '\r') {
        field.append(c);
      }
    }
    out.add(field.toString());
    return out;
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
            + "\nusage: DataStreamJob [--mode core|checkpointed] [--dedup split|keyed] [--clicks N] [--rate-per-s R]"
            + " [--seed N] [--parallelism P] [--slack-ms MS] [--horizon-ms MS] [--checkpoint-interval D]"
            + " [--checkpoint-dir DIR] [--set KEY=VALUE]... [--check] [--input CLICKS.ndjson [--catalog ADS.csv]]"
            + " [--rows-out OUT.csv] [--serializer tuned|pojo] [--ttl-cleanup N] [--break-dedup]");
  }
}
