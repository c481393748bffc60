package tally.bench.flink;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import org.apache.flink.api.common.JobExecutionResult;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.table.api.EnvironmentSettings;
import org.apache.flink.table.api.StatementSet;
import org.apache.flink.table.api.TableResult;
import org.apache.flink.table.api.bridge.java.StreamTableEnvironment;

/**
 * tally's default clicks job in Flink SQL on a local MiniCluster: generated clicks, retries
 * dropped by request id, ads attributed to campaign and advertiser through the catalog, tumbling
 * 1m / 5m / 1h event-time windows per ad, campaign and advertiser with clicks and distinct users,
 * into a blackhole sink. Two formulations ({@code --plan}): the straightforward one aggregates
 * every window size and key from the clicks; the tuned one folds each click once, into 1m
 * partials per ad, and rolls the rest up from those. Bounded: the job ends when the source has produced all clicks and the
 * final watermark has fired every window.
 *
 * <pre>
 * --mode core|checkpointed|generator   default core; generator: source into blackhole, no job
 * --plan tuned|straightforward         default tuned: one fold per click into 1m partials per ad,
 *                                      attributed once per ad and minute, every window size and
 *                                      key rolled up from them (cascading window aggregation),
 *                                      two-phase; straightforward: every window size and key
 *                                      aggregated from the attributed clicks
 * --mini-batch on|off                  tuned: mini-batch for the deduplication, default off (slower
 *                                      here, see bench/flink/README.md)
 * --clicks N                           default 5000000
 * --rate-per-s R                       event-time rate, default 1000000
 * --parallelism P                      default 2
 * --distinct approx|exact|both|none    distinct users: hll_users (HyperLogLog), COUNT(DISTINCT),
 *                                      both, or none; default approx (tuned: approx or none, the
 *                                      sketches rolled up with hll_merge)
 * --windows 1m,5m,1h                   window sizes, default all three
 * --group-by ad,campaign,advertiser    keys, default all three
 * --dedup on|off                       default on
 * --seed N                             default 1
 * --checkpoint-dir DIR                 checkpointed: where checkpoints go (default: a temp dir)
 * --checkpoint-interval DURATION       checkpointed: default 2 s
 * --set KEY=VALUE                      any Flink option, repeatable (applied last)
 * --check                              count the rows instead of dropping them, and check the totals
 * --explain                            print the optimized plan and exit
 * </pre>
 *
 * <p>Prints {@code flink ...: value} lines on stdout; logs go to stderr. {@code elapsed s} is the
 * job's run time as the JobManager reports it (submission to finish: deployment, operator
 * start-up and code generation included); {@code startup s} is the rest of the time around
 * {@code execute()}: planning and starting the local cluster. {@code events/s} = clicks /
 * elapsed. {@code processing s} runs from the first generated click to the end of the job, so
 * it leaves out deployment and operator start-up too.
 */
public final class ClicksJob {
  private ClicksJob() {}

  public static void main(String[] args) throws Exception {
    String mode = "core";
    String plan = "tuned";
    boolean miniBatch = false;
    long clicks = 5_000_000;
    long rate = 1_000_000;
    int parallelism = 2;
    String distinct = "approx";
    List<String> windows = List.of("1m", "5m", "1h");
    List<String> groupBy = List.of("ad", "campaign", "advertiser");
    boolean dedup = true;
    long seed = 1;
    String checkpointDir = null;
    String checkpointInterval = "2 s";
    boolean explain = false;
    boolean check = false;
    Map<String, String> extra = new LinkedHashMap<>();
    for (int i = 0; i < args.length; i++) {
      String arg = args[i];
      switch (arg) {
        case "--mode" -> mode = value(args, ++i, arg);
        case "--plan" -> plan = value(args, ++i, arg);
        case "--mini-batch" -> miniBatch = onOff(value(args, ++i, arg), arg);
        case "--clicks" -> clicks = Long.parseLong(value(args, ++i, arg));
        case "--rate-per-s" -> rate = Long.parseLong(value(args, ++i, arg));
        case "--parallelism" -> parallelism = Integer.parseInt(value(args, ++i, arg));
        case "--distinct" -> distinct = value(args, ++i, arg);
        case "--windows" -> windows = List.of(value(args, ++i, arg).split(","));
        case "--group-by" -> groupBy = List.of(value(args, ++i, arg).split(","));
        case "--dedup" -> dedup = onOff(value(args, ++i, arg), arg);
        case "--seed" -> seed = Long.parseLong(value(args, ++i, arg));
        case "--checkpoint-dir" -> checkpointDir = value(args, ++i, arg);
        case "--checkpoint-interval" -> checkpointInterval = value(args, ++i, arg);
        case "--set" -> {
          String kv = value(args, ++i, arg);
          int eq = kv.indexOf('=');
          if (eq <= 0) {
            throw usage("--set takes KEY=VALUE, got " + kv);
          }
          extra.put(kv.substring(0, eq), kv.substring(eq + 1));
        }
        case "--explain" -> explain = true;
        case "--check" -> check = true;
        default -> throw usage("unknown argument " + arg);
      }
    }
    if (!List.of("core", "checkpointed", "generator").contains(mode)) {
      throw usage("--mode must be core, checkpointed or generator, got " + mode);
    }
    if (!List.of("tuned", "straightforward").contains(plan)) {
      throw usage("--plan must be tuned or straightforward, got " + plan);
    }
    boolean tuned = plan.equals("tuned");
    if (!List.of("both", "exact", "approx", "none").contains(distinct)) {
      throw usage("--distinct must be both, exact, approx or none, got " + distinct);
    }
    if (miniBatch && !tuned) {
      throw usage("--mini-batch on needs --plan tuned (hll_users cannot retract, which mini-batch asks for)");
    }
    if (tuned && !List.of("approx", "none").contains(distinct)) {
      throw usage("--plan tuned rolls distinct users up from 1m sketches: --distinct approx or none"
          + " (COUNT(DISTINCT) cannot be rolled up; use --plan straightforward)");
    }
    for (String window : windows) {
      if (!WINDOWS.containsKey(window)) {
        throw usage("--windows takes a comma-separated list of " + WINDOWS.keySet() + ", got " + window);
      }
    }
    for (String key : groupBy) {
      if (!KEYS.containsKey(key)) {
        throw usage("--group-by takes a comma-separated list of " + KEYS.keySet() + ", got " + key);
      }
    }
    if (clicks < 1 || rate < 1 || parallelism < 1) {
      throw usage("--clicks, --rate-per-s and --parallelism must be at least 1");
    }

    Map<String, String> options = new LinkedHashMap<>();
    options.put("execution.runtime-mode", "STREAMING");
    options.put("parallelism.default", Integer.toString(parallelism));
    options.put("table.local-time-zone", "UTC");
    // Chained operators hand records on without a defensive copy; the SQL runtime's operators
    // copy what they keep, so this is safe for a SQL job (and a usual setting for one).
    options.put("pipeline.object-reuse", "true");
    // Retries are remembered for 60 s (processing time), as tally's dedup horizon (event time).
    options.put("table.exec.state.ttl", "60 s");
    if (tuned) {
      options.putAll(TUNED_OPTIONS);
      if (miniBatch) {
        options.putAll(MINI_BATCH_OPTIONS);
      }
    }
    Path tempCheckpoints = mode.equals("checkpointed")
        ? LocalJob.checkpointing(options, checkpointInterval, checkpointDir, "flink-clicks-checkpoints-")
        : null;
    options.putAll(extra);

    StreamExecutionEnvironment env = LocalJob.environment(parallelism, options);
    StreamTableEnvironment tEnv = StreamTableEnvironment.create(env, EnvironmentSettings.inStreamingMode());
    options.forEach((key, value) -> tEnv.getConfig().set(ConfigOptions.key(key).stringType().noDefaultValue(), value));

    StatementSet statements = tEnv.createStatementSet();
    for (String sql : ddl(clicks, rate, seed, dedup, check, distinct)) {
      tEnv.executeSql(sql);
    }
    List<String> inserts = mode.equals("generator") ? List.of(GENERATOR_INSERT)
        : tuned ? tunedInserts(distinct, windows, groupBy) : inserts(distinct, windows, groupBy);
    for (String sql : inserts) {
      statements.addInsertSql(sql);
    }
    if (explain) {
      System.out.println(statements.explain());
      return;
    }

    JvmStats.TaskCpu taskCpu = new JvmStats.TaskCpu();
    taskCpu.start();
    long cpuBefore = JvmStats.processCpuNanos();
    long busyBefore = JvmStats.machineBusyJiffies();
    long wallStart = System.nanoTime();
    JobExecutionResult job;
    try {
      TableResult result = statements.execute();
      job = result.getJobClient().orElseThrow().getJobExecutionResult().get();
    } finally {
      if (tempCheckpoints != null) {
        LocalJob.deleteTree(tempCheckpoints);
      }
    }
    long end = System.nanoTime();
    double wall = (end - wallStart) / 1e9;
    double processing = (end - ClickSource.FIRST_CLICK_NANOS.get()) / 1e9;
    double cpu = (JvmStats.processCpuNanos() - cpuBefore) / 1e9;
    long busyAfter = JvmStats.machineBusyJiffies();
    double otherLoad = busyBefore < 0 || busyAfter < 0 ? -1 : Math.max(0, ((busyAfter - busyBefore) / 100.0 - cpu) / wall);
    double tasks = taskCpu.finish();
    double runtime = job.getNetRuntime(TimeUnit.MILLISECONDS) / 1e3;

    System.out.println("flink version: " + org.apache.flink.runtime.util.EnvironmentInformation.getVersion());
    System.out.println("flink mode: " + mode);
    System.out.println("flink parallelism: " + parallelism);
    if (!mode.equals("generator")) {
      System.out.println("flink job: " + plan + (miniBatch ? " with mini-batch" : "") + ", dedup " + (dedup ? "on" : "off") + ", windows " + String.join(",", windows)
          + ", group by " + String.join(",", groupBy) + ", distinct " + distinct);
    }
    System.out.println("flink rate-per-s: " + rate);
    System.out.println("flink clicks: " + clicks);
    System.out.printf("flink elapsed s: %.3f%n", runtime);
    System.out.printf("flink startup s: %.3f%n", wall - runtime);
    System.out.printf("flink events/s: %.0f%n", clicks / runtime);
    System.out.printf("flink events/s incl. startup: %.0f%n", clicks / wall);
    System.out.printf("flink processing s: %.3f%n", processing);
    System.out.printf("flink events/s processing: %.0f%n", clicks / processing);
    System.out.printf("flink cpu s: %.2f%n", cpu);
    System.out.printf("flink task cpu s: %.2f%n", tasks);
    System.out.printf("flink events per task cpu s: %.0f%n", clicks / tasks);
    System.out.printf("flink gc s: %.2f%n", JvmStats.gcSeconds());
    if (mode.equals("checkpointed")) {
      System.out.println("flink checkpoints completed: " + ClickSource.LAST_COMPLETED_CHECKPOINT.get());
    }
    System.out.println("flink peak rss mib: " + JvmStats.peakRssMib());
    System.out.printf("flink other load cores: %.2f%n", otherLoad);
    boolean failed = false;
    if (check && !mode.equals("generator")) {
      // The roll-up's distinct users must be hll_users' estimates: same sketches, merged.
      int hllMismatches = tuned && !distinct.equals("none") ? HllSketches.selfCheck() : 0;
      failed = !check(ClickSource.GENERATED.sum(), ClickSource.RETRIES.sum(), ClickSource.TOO_LATE.sum(), windows, groupBy, dedup, hllMismatches);
    }
    System.out.flush();
    if (failed) {
      System.exit(1);
    }
  }

  /**
   * Prints the counting sink's totals and checks them: for every window size, each key type
   * counted the same clicks, no more than the unique clicks generated and no fewer than those
   * less the too-late ones (which a window may drop). In the tuned plan the 5m and 1h windows add
   * up the 1m rows, so they drop what the 1m windows dropped; in the straightforward plan they
   * may keep clicks too late for their minute but not for them. {@code hllMismatches}: the
   * tuned plan's sketch check ({@link HllSketches#selfCheck}), 0 when it passed or did not run.
   */
  private static boolean check(long generated, long retries, long tooLate, List<String> windows, List<String> groupBy, boolean dedup,
      int hllMismatches) {
    long unique = generated - (dedup ? retries : 0);
    System.out.println("flink generated: " + generated + " (retries " + retries + ", too late " + tooLate + ")");
    Map<String, long[]> totals = CountingSinkFactory.totals();
    boolean ok = !totals.isEmpty();
    for (String window : windows) {
      Long clicks = null;
      for (String key : groupBy) {
        long[] total = totals.getOrDefault(window + "/" + key, new long[2]);
        System.out.println("flink rows " + window + " " + key + ": " + total[0] + " rows, " + total[1] + " clicks");
        if (clicks != null && clicks != total[1]) {
          ok = false;
        }
        clicks = total[1];
        if (total[1] > unique || total[1] < unique - tooLate) {
          ok = false;
        }
      }
    }
    if (hllMismatches != 0) {
      System.out.println("flink check: FAILED (" + hllMismatches + " merged sketches estimate other than hll_users)");
      return false;
    }
    System.out.println("flink check: " + (ok ? "ok" : "FAILED (expected " + (unique - tooLate) + ".." + unique + " clicks per window size and key type)"));
    return ok;
  }

  /** Window sizes by name, as SQL interval literals. */
  private static final Map<String, String> WINDOWS = Map.of("1m", "'1' MINUTE", "5m", "'5' MINUTE", "1h", "'1' HOUR");

  /** Grouping keys by name, as columns of the attributed view. */
  private static final Map<String, String> KEYS = Map.of("ad", "ad_id", "campaign", "campaign_id", "advertiser", "advertiser_id");

  /**
   * The tuned plan's engine settings. Two phases: every window aggregate folds into a local,
   * per-task buffer before the exchange, and only the partials cross it, so the viral ad's 40 %
   * of the clicks do not all land on one task (the planner's default, AUTO, picks this for window
   * aggregates too; stated so that the plan cannot drift). Mini-batch off: it only changes the
   * deduplication here, and measured slower (see {@link #MINI_BATCH_OPTIONS}).
   */
  static final Map<String, String> TUNED_OPTIONS = Map.of(
      "table.optimizer.agg-phase-strategy", "TWO_PHASE",
      "table.exec.mini-batch.enabled", "false");

  /**
   * {@code --mini-batch on}: the deduplication buffers up to 5,000 rows (or 1 s) in a map,
   * keeping the first of each request id, and looks each id up in state once a batch. Window
   * aggregates buffer anyway and ignore it. The planner then inserts a mini-batch assigner (in
   * event time: the watermark, coarsened to 1 s, closes a batch) and types the deduplication's
   * output as a changelog, so the window aggregates become retractable (COUNT_RETRACT, and
   * {@code hll_sketch}'s retract); every row is copied into the batch.
   */
  static final Map<String, String> MINI_BATCH_OPTIONS = Map.of(
      "table.exec.mini-batch.enabled", "true",
      "table.exec.mini-batch.allow-latency", "1 s",
      "table.exec.mini-batch.size", "5000");

  private static List<String> ddl(long clicks, long rate, long seed, boolean dedup, boolean check, String distinct) {
    List<String> sql = new ArrayList<>();
    sql.add(
        "CREATE TEMPORARY TABLE clicks (\n"
            + "  ad_id STRING,\n"
            + "  ts BIGINT,\n"
            + "  user_id BIGINT,\n"
            + "  request_id BINARY(16),\n"
            + "  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),\n"
            + "  pt AS PROCTIME(),\n"
            + "  WATERMARK FOR rowtime AS rowtime - INTERVAL '5' SECOND\n"
            + ") WITH (\n"
            + "  'connector' = '" + ClickTableFactory.IDENTIFIER + "',\n"
            + "  'clicks' = '" + clicks + "',\n"
            + "  'rate-per-s' = '" + rate + "',\n"
            + "  'seed' = '" + seed + "'\n"
            + ")");
    sql.add("CREATE TEMPORARY FUNCTION campaign_of AS '" + Catalog.CampaignOf.class.getName() + "'");
    sql.add("CREATE TEMPORARY FUNCTION advertiser_of AS '" + Catalog.AdvertiserOf.class.getName() + "'");
    sql.add("CREATE TEMPORARY FUNCTION hll_users AS '" + HllUsers.class.getName() + "'");
    sql.add("CREATE TEMPORARY FUNCTION hll_sketch AS '" + HllSketches.Sketch.class.getName() + "'");
    sql.add("CREATE TEMPORARY FUNCTION hll_merge AS '" + HllSketches.Merge.class.getName() + "'");
    sql.add("CREATE TEMPORARY FUNCTION hll_estimate AS '" + HllSketches.Estimate.class.getName() + "'");
    // Deduplication, keep first: the first click of each request id in arrival order wins.
    sql.add(
        dedup
            ? "CREATE TEMPORARY VIEW unique_clicks AS\n"
                + "SELECT ad_id, user_id, rowtime FROM (\n"
                + "  SELECT ad_id, user_id, rowtime,\n"
                + "    ROW_NUMBER() OVER (PARTITION BY request_id ORDER BY pt ASC) AS rn\n"
                + "  FROM clicks)\n"
                + "WHERE rn = 1"
            : "CREATE TEMPORARY VIEW unique_clicks AS SELECT ad_id, user_id, rowtime FROM clicks");
    // Tuned: the one fold per click, into 1m partials per ad (clicks and the users' sketch), then
    // the catalog lookup once per ad and minute. The partials' window_time (the minute's last
    // millisecond) is their event time, for the windows rolled up from them.
    sql.add(
        "CREATE TEMPORARY VIEW ad_minutes AS\n"
            + "SELECT ad_id, window_time AS rowtime, COUNT(*) AS clicks"
            + (distinct.equals("none") ? "" : ", hll_sketch(user_id) AS users") + "\n"
            + "FROM TABLE(TUMBLE(TABLE unique_clicks, DESCRIPTOR(rowtime), INTERVAL '1' MINUTE))\n"
            + "GROUP BY ad_id, window_start, window_end, window_time");
    sql.add(
        "CREATE TEMPORARY VIEW attributed_minutes AS\n"
            + "SELECT ad_id, campaign_of(ad_id) AS campaign_id, advertiser_of(ad_id) AS advertiser_id,\n"
            + "  rowtime, clicks" + (distinct.equals("none") ? "" : ", users") + "\n"
            + "FROM ad_minutes");
    sql.add(
        "CREATE TEMPORARY VIEW attributed AS\n"
            + "SELECT ad_id, campaign_of(ad_id) AS campaign_id, advertiser_of(ad_id) AS advertiser_id,\n"
            + "  user_id, rowtime\n"
            + "FROM unique_clicks");
    sql.add(
        "CREATE TEMPORARY TABLE window_rows (\n"
            + "  window_size STRING,\n"
            + "  key_type STRING,\n"
            + "  key_id STRING,\n"
            + "  window_start TIMESTAMP(3),\n"
            + "  window_end TIMESTAMP(3),\n"
            + "  clicks BIGINT,\n"
            + "  users_exact BIGINT,\n"
            + "  users_approx BIGINT\n"
            + ") WITH ('connector' = '" + (check ? CountingSinkFactory.IDENTIFIER : "blackhole") + "')");
    sql.add(
        "CREATE TEMPORARY TABLE generated (\n"
            + "  ad_id STRING, ts BIGINT, user_id BIGINT, request_id BINARY(16)\n"
            + ") WITH ('connector' = 'blackhole')");
    return sql;
  }

  private static final String GENERATOR_INSERT =
      "INSERT INTO generated SELECT ad_id, ts, user_id, request_id FROM clicks";

  /** One INSERT per window size; several keys share it through GROUPING SETS. */
  private static List<String> inserts(String distinct, List<String> windows, List<String> groupBy) {
    String exact = distinct.equals("both") || distinct.equals("exact") ? "COUNT(DISTINCT user_id)" : "CAST(NULL AS BIGINT)";
    String approx = distinct.equals("both") || distinct.equals("approx") ? "hll_users(user_id)" : "CAST(NULL AS BIGINT)";
    String[] keys = keyColumns(groupBy);
    List<String> sql = new ArrayList<>();
    for (String window : windows) {
      sql.add(
          "INSERT INTO window_rows\n"
              + "SELECT '" + window + "', " + keys[0] + ", " + keys[1] + ",\n"
              + "  window_start, window_end, COUNT(*), " + exact + ", " + approx + "\n"
              + "FROM TABLE(TUMBLE(TABLE attributed, DESCRIPTOR(rowtime), INTERVAL " + WINDOWS.get(window) + "))\n"
              + "GROUP BY window_start, window_end, " + keys[2]);
    }
    return sql;
  }

  /**
   * The tuned plan: every window size and key rolled up from the attributed 1m partials per ad
   * (a TUMBLE over their window_time), one INSERT per window size as above. The 1m windows
   * regroup the minute's partials; 5m and 1h add up 5 and 60 minutes of them.
   */
  private static List<String> tunedInserts(String distinct, List<String> windows, List<String> groupBy) {
    String approx = distinct.equals("approx") ? "hll_estimate(hll_merge(users))" : "CAST(NULL AS BIGINT)";
    String[] keys = keyColumns(groupBy);
    List<String> sql = new ArrayList<>();
    for (String window : windows) {
      sql.add(
          "INSERT INTO window_rows\n"
              + "SELECT '" + window + "', " + keys[0] + ", " + keys[1] + ",\n"
              + "  window_start, window_end, SUM(clicks), CAST(NULL AS BIGINT), " + approx + "\n"
              + "FROM TABLE(TUMBLE(TABLE attributed_minutes, DESCRIPTOR(rowtime), INTERVAL " + WINDOWS.get(window) + "))\n"
              + "GROUP BY window_start, window_end, " + keys[2]);
    }
    return sql;
  }

  /** The key type and key id expressions and the GROUP BY keys for the key types {@code groupBy}. */
  private static String[] keyColumns(List<String> groupBy) {
    List<String> columns = groupBy.stream().map(KEYS::get).toList();
    String keyType;
    String keyId;
    String grouping;
    if (columns.size() == 1) {
      keyType = "'" + groupBy.get(0) + "'";
      keyId = columns.get(0);
      grouping = columns.get(0);
    } else {
      // GROUPING_ID(k1, .., kn) has bit n-1-i clear for the set that groups by ki alone.
      StringBuilder cases = new StringBuilder("CASE GROUPING_ID(" + String.join(", ", columns) + ")");
      int all = (1 << columns.size()) - 1;
      for (int i = 0; i < columns.size(); i++) {
        cases.append(" WHEN ").append(all & ~(1 << (columns.size() - 1 - i))).append(" THEN '").append(groupBy.get(i)).append("'");
      }
      keyType = cases.append(" END").toString();
      keyId = "COALESCE(" + String.join(", ", columns) + ")";
      grouping = "GROUPING SETS (" + String.join(", ", columns.stream().map(c -> "(" + c + ")").toList()) + ")";
    }
    return new String[] {keyType, keyId, grouping};
  }

  private static boolean onOff(String value, String flag) {
    return switch (value) {
      case "on" -> true;
      case "off" -> false;
      default -> throw usage(flag + " takes on or off, got " + value);
    };
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
            + "\nusage: ClicksJob [--mode core|checkpointed|generator] [--plan tuned|straightforward]"
            + " [--mini-batch on|off]"
            + " [--clicks N] [--rate-per-s R]"
            + " [--parallelism P] [--distinct approx|exact|both|none] [--windows 1m,5m,1h]"
            + " [--group-by ad,campaign,advertiser] [--dedup on|off] [--seed N] [--checkpoint-dir DIR]"
            + " [--checkpoint-interval DURATION] [--set KEY=VALUE]... [--check] [--explain]");
  }
}
