//! Tests of job files as a user writes them: the shipped jobs, the defaults,
//! and one test per refusal, each asserting the whole one-line message.

use std::path::{Path, PathBuf};

use super::*;
use crate::store::cassandra::CassandraConfig;

const FILE: &str = "jobs/x.toml";

fn jobs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs")
}

fn parse_ok(text: &str) -> Job {
    match parse(text, Path::new(FILE)) {
        Ok(job) => job,
        Err(err) => panic!("expected {text:?} to parse, got: {err}"),
    }
}

/// The message for `text`, checked to be one line with exit code 2.
fn message(text: &str) -> String {
    let err = parse(text, Path::new(FILE)).expect_err("job should be refused");
    assert_eq!(err.exit_code(), 2);
    let message = err.to_string();
    assert!(!message.contains('\n'), "not one line: {message}");
    message
}

fn assert_refused(text: &str, key: &str, reason: &str) {
    assert_eq!(message(text), format!("{FILE}: key '{key}': {reason}"));
}

#[test]
fn an_empty_file_is_the_defaults() {
    assert_eq!(parse_ok(""), Job::defaults(Path::new(FILE)));
    let job = Job::defaults(Path::new("jobs/x.toml"));
    assert_eq!(job.name, "x");
    assert_eq!(job.windows_ms, [60_000, 300_000, 3_600_000]);
    assert_eq!(job.late, LatePolicy::Restate { within_ms: 3_600_000 });
}

#[test]
fn shipped_clicks_job_lists_the_defaults() {
    let file = jobs_dir().join("clicks.toml");
    let text = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/clicks.toml"));
    let job = parse(text, &file).expect("jobs/clicks.toml parses");
    let expected = Job {
        source: SourceSpec::File { path: Some(jobs_dir().join("clicks.ndjson")) },
        sink: SinkSpec::File { path: Some(jobs_dir().join("rows.ndjson")) },
        catalog: None,
        ..Job::defaults(&file)
    };
    assert_eq!(job, expected);
}

#[test]
fn shipped_cassandra_job_reads_the_log_into_cassandra() {
    let file = jobs_dir().join("cassandra.toml");
    let job = load(&file).expect("jobs/cassandra.toml loads");
    assert_eq!(job.source, SourceSpec::Log { dir: None });
    assert_eq!(job.sink, SinkSpec::Cassandra(CassandraConfig::default()));
    let moved = with_cassandra(job, Some("127.0.0.2:9042,127.0.0.3:9042")).unwrap();
    let SinkSpec::Cassandra(config) = &moved.sink else { panic!("{:?}", moved.sink) };
    assert_eq!(config.hosts, ["127.0.0.2:9042", "127.0.0.3:9042"]);
    let refused = with_cassandra(moved.clone(), Some("nohost")).unwrap_err().to_string();
    assert!(refused.ends_with("key 'sink.hosts': --cassandra \"nohost\" is not host:port"), "{refused}");
    let not_cassandra = with_cassandra(load(&jobs_dir().join("embedded.toml")).unwrap(), Some("h:1")).unwrap_err().to_string();
    assert!(not_cassandra.ends_with("--cassandra is only valid for a job with sink.kind = \"cassandra\""), "{not_cassandra}");
}

#[test]
fn cassandra_sink_keys_are_checked() {
    let job = parse_ok(
        "[sink]\nkind = \"cassandra\"\nhosts = \"10.0.0.1:9042\"\nkeyspace = \"ads_1\"\nreplication_factor = 3\n\
         consistency = \"local_quorum\"\nserial_consistency = \"local_serial\"",
    );
    let expected = CassandraConfig {
        hosts: vec!["10.0.0.1:9042".into()],
        keyspace: "ads_1".into(),
        replication_factor: 3,
        consistency: crate::store::cassandra::Level::LocalQuorum,
        serial_consistency: crate::store::cassandra::SerialLevel::LocalSerial,
    };
    assert_eq!(job.sink, SinkSpec::Cassandra(expected));
    let sink = |keys: &str| format!("[sink]\nkind = \"cassandra\"\n{keys}");
    assert_refused(&sink("hosts = \"db\""), "sink.hosts", "\"db\" is not host:port");
    assert_refused(
        &sink("keyspace = \"Ads\""),
        "sink.keyspace",
        "\"Ads\" is not a keyspace name (a lowercase letter, then lowercase letters, digits and '_', at most 48 bytes)",
    );
    assert_refused(&sink("replication_factor = 0"), "sink.replication_factor", "0 is not in 1..=9");
    assert_refused(
        &sink("consistency = \"most\""),
        "sink.consistency",
        "\"most\" is not one of one | two | three | quorum | all | local_quorum | each_quorum | local_one",
    );
    assert_refused(&sink("serial_consistency = \"quorum\""), "sink.serial_consistency", "\"quorum\" is not one of serial | local_serial");
    assert_refused(&sink("path = \"x\""), "sink.path", "only valid with kind = \"file\" (this sink is kind = \"cassandra\")");
    assert_refused(
        "[sink]\nkind = \"store\"\nkeyspace = \"k\"",
        "sink.keyspace",
        "only valid with kind = \"cassandra\" (this sink is kind = \"store\")",
    );
}

#[test]
fn shipped_generated_job_needs_no_files() {
    let file = jobs_dir().join("generated.toml");
    let job = load(&file).expect("jobs/generated.toml loads");
    let SourceSpec::Generator(config) = &job.source else {
        panic!("expected a generator source, got {:?}", job.source);
    };
    assert_eq!(config.clicks, 5_000_000);
    assert_eq!(config.ads, 10_000);
    assert_eq!(config.partitions, job.partitions);
    assert_eq!(job.sink, SinkSpec::Memory);
    assert_eq!(job.catalog, None);
}

#[test]
fn durations_take_every_unit_and_integer_milliseconds() {
    let job = parse_ok(
        "[time]\nepoch = \"250ms\"\nwatermark_slack = 1500\nallowed_lateness = \"1m\"\n\
         [dedup]\nhorizon = \"1d\"\n[windows]\nsizes = [\"1h\", 60000, \"1d\"]",
    );
    assert_eq!((job.epoch_ms, job.slack_ms, job.allowed_lateness_ms, job.dedup_horizon_ms), (250, 1_500, 60_000, 86_400_000));
    assert_eq!(job.windows_ms, [60_000, 3_600_000, 86_400_000]);
}

#[test]
fn paths_resolve_against_the_job_file_directory() {
    let job = parse_ok(
        "[source]\npath = \"in/clicks.ndjson\"\n[sink]\npath = \"/abs/rows.ndjson\"\n\
         [catalog]\npath = \"ads.csv\"",
    );
    assert_eq!(job.source, SourceSpec::File { path: Some("jobs/in/clicks.ndjson".into()) });
    assert_eq!(job.sink, SinkSpec::File { path: Some("/abs/rows.ndjson".into()) });
    assert_eq!(job.catalog, Some("jobs/ads.csv".into()));
    let job = parse_ok("[source]\nkind = \"log\"\ndir = \"log\"\n[late]\npolicy = \"hold\"");
    assert_eq!(job.source, SourceSpec::Log { dir: Some("jobs/log".into()) });
    assert_eq!(job.late, LatePolicy::Hold);
}

#[test]
fn aggregate_keeps_the_listed_order_and_measures() {
    let job = parse_ok("[aggregate]\ngroup_by = [\"campaign\", \"ad\"]\nmeasures = [\"clicks\"]");
    assert_eq!(job.group_by, [KeyType::Campaign, KeyType::Ad]);
    assert!(!job.distinct_users);
}

// --- durations ---

#[test]
fn negative_duration_is_refused() {
    assert_refused("[time]\nwatermark_slack = \"-5s\"", "time.watermark_slack", "negative duration \"-5s\"");
    assert_refused("[time]\nwatermark_slack = -5", "time.watermark_slack", "negative duration -5");
}

#[test]
fn garbage_duration_is_refused() {
    assert_refused(
        "[dedup]\nhorizon = \"soon\"",
        "dedup.horizon",
        "invalid duration \"soon\" (expected an integer and one of ms, s, m, h, d, e.g. \"5s\")",
    );
    assert_refused("[time]\nepoch = 1.5", "time.epoch", "expected a duration such as \"5s\" or integer milliseconds, found float");
}

#[test]
fn overflowing_duration_is_refused() {
    assert_refused("[dedup]\nhorizon = \"9999999999999999d\"", "dedup.horizon", "duration \"9999999999999999d\" is too large");
}

// --- unknown keys and types ---

#[test]
fn unknown_keys_are_named_by_dotted_path() {
    assert_refused("[source]\ncolour = \"red\"", "source.colour", "unknown key");
    assert_refused("colour = \"red\"", "colour", "unknown key");
    assert_refused("[tme]\nepoch = \"1s\"", "tme", "unknown key");
    assert_refused("[source]\nkind = \"generator\"\n[source.generator]\ncolour = 1", "source.generator.colour", "unknown key");
}

#[test]
fn wrong_types_are_named() {
    assert_refused("time = 3", "time", "expected a table, found integer");
    assert_refused("[source]\npartitions = \"8\"", "source.partitions", "expected an integer, found string");
    assert_refused("[aggregate]\ngroup_by = [\"ad\", 1]", "aggregate.group_by", "entry 2: expected a string, found integer");
    assert_refused(
        "[windows]\nsizes = [\"1m\", true]",
        "windows.sizes",
        "entry 2: expected a duration such as \"5s\" or integer milliseconds, found boolean",
    );
}

#[test]
fn syntax_errors_give_line_and_column() {
    let bad_value = message("name = \"x\"\n[time]\nepoch = = \"1s\"\n");
    assert!(bad_value.starts_with("jobs/x.toml: line 3, column 9: "), "{bad_value}");
    let twice = message("[time]\n[time]\n");
    assert!(twice.starts_with("jobs/x.toml: line 2, column 1: "), "{twice}");
}

#[test]
fn unreadable_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.toml");
    let err = load(&missing).expect_err("missing file");
    let text = err.to_string();
    let prefix = format!("{}: cannot read job file: ", missing.display());
    assert!(text.starts_with(&prefix), "{text}");
    assert!(!text.contains('\n'));
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn name_must_be_safe() {
    assert_refused("name = \"my job\"", "name", "name \"my job\" must be 1–64 bytes of [A-Za-z0-9._-]");
}

// --- source ---

#[test]
fn kind_must_be_known() {
    assert_refused("[source]\nkind = \"s3\"", "source.kind", "\"s3\" is not one of file | generator | log | kafka");
    assert_refused("[sink]\nkind = \"s3\"", "sink.kind", "\"s3\" is not one of file | memory | store | cassandra");
}

#[test]
fn a_kafka_source_has_brokers_and_a_topic() {
    let job = parse_ok("[source]\nkind = \"kafka\"\nbrokers = \"127.0.0.1:9092,h2:9093\"\ntopic = \"clicks.v2\"\npartitions = 4");
    assert_eq!(job.source, SourceSpec::Kafka { brokers: "127.0.0.1:9092,h2:9093".into(), topic: "clicks.v2".into() });
    let defaults = parse_ok("[source]\nkind = \"kafka\"");
    assert_eq!(defaults.source, SourceSpec::Kafka { brokers: DEFAULT_KAFKA_BROKERS.into(), topic: DEFAULT_KAFKA_TOPIC.into() });
    assert_refused(
        "[source]\nkind = \"kafka\"\nbrokers = \"localhost\"",
        "source.brokers",
        "\"localhost\" is not a list of host:port separated by commas",
    );
    assert_refused(
        "[source]\nkind = \"kafka\"\ntopic = \"a b\"",
        "source.topic",
        "\"a b\" is not a Kafka topic name (1–249 of [A-Za-z0-9._-])",
    );
    assert_refused(
        "[source]\nkind = \"log\"\ntopic = \"t\"",
        "source.topic",
        "only valid with kind = \"kafka\" (this source is kind = \"log\")",
    );
    assert_refused(
        "[source]\nkind = \"kafka\"\npath = \"x\"",
        "source.path",
        "only valid with kind = \"file\" (this source is kind = \"kafka\")",
    );
    let job = parse_ok("[source]\nkind = \"kafka\"");
    assert_eq!(
        with_brokers(job.clone(), Some("10.0.0.1:9092")).unwrap().source,
        SourceSpec::Kafka { brokers: "10.0.0.1:9092".into(), topic: DEFAULT_KAFKA_TOPIC.into() }
    );
    assert!(with_brokers(job, Some("nope")).unwrap_err().to_string().contains("source.brokers"));
    assert!(with_brokers(parse_ok(""), Some("h:1")).unwrap_err().to_string().contains("only valid for a job with source.kind = \"kafka\""));
}

#[test]
fn partitions_must_be_in_range() {
    for n in ["0", "4097", "-1"] {
        assert_refused(&format!("[source]\npartitions = {n}"), "source.partitions", &format!("{n} is out of range 1..=4096"));
    }
    assert_eq!(parse_ok("[source]\npartitions = 4096").partitions, 4096);
}

#[test]
fn keys_of_another_kind_are_refused() {
    assert_refused(
        "[source]\nkind = \"generator\"\npath = \"c.ndjson\"",
        "source.path",
        "only valid with kind = \"file\" (this source is kind = \"generator\")",
    );
    assert_refused("[source]\ndir = \"log\"", "source.dir", "only valid with kind = \"log\" (this source is kind = \"file\")");
    assert_refused(
        "[sink]\nkind = \"memory\"\npath = \"rows.ndjson\"",
        "sink.path",
        "only valid with kind = \"file\" (this sink is kind = \"memory\")",
    );
    assert_refused(
        "[late]\npolicy = \"hold\"\nrestate_within = \"1h\"",
        "late.restate_within",
        "only valid with policy = \"restate\" (this job's policy is \"hold\")",
    );
}

#[test]
fn empty_paths_are_refused() {
    assert_refused("[catalog]\npath = \"\"", "catalog.path", "empty path");
}

#[test]
fn generator_keys_are_checked_one_by_one() {
    let mistyped = message("[source]\nkind = \"generator\"\n[source.generator]\nclicks = \"many\"");
    assert!(mistyped.starts_with("jobs/x.toml: key 'source.generator.clicks': invalid type: string \"many\""), "{mistyped}");
}

#[test]
fn generator_partitions_follow_the_source() {
    let job = parse_ok("[source]\nkind = \"generator\"\npartitions = 4");
    let SourceSpec::Generator(config) = job.source else {
        panic!("expected a generator source");
    };
    assert_eq!(config.partitions, 4);
    assert_refused(
        "[source]\nkind = \"generator\"\npartitions = 4\n[source.generator]\npartitions = 8",
        "source.generator.partitions",
        "8 differs from source.partitions (4); leave it out to follow source.partitions",
    );
}

#[test]
fn generator_validation_is_placed_under_source_generator() {
    // `validate` messages start with the field: "viral_share: …".
    let share = message("[source]\nkind = \"generator\"\n[source.generator]\nviral_share = 2.0");
    assert!(share.starts_with("jobs/x.toml: key 'source.generator.viral_share': "), "{share}");
}

// --- time ---

#[test]
fn epoch_must_be_long_enough_and_divide_a_minute() {
    assert_refused("[time]\nepoch = 0", "time.epoch", "epoch 0 is below the minimum of 10ms");
    assert_refused("[time]\nepoch = \"5ms\"", "time.epoch", "epoch \"5ms\" is below the minimum of 10ms");
    assert_refused("[time]\nepoch = \"7s\"", "time.epoch", "epoch \"7s\" does not divide 1m (every window must end on an epoch boundary)");
}

#[test]
fn allowed_lateness_must_be_whole_epochs() {
    assert_refused(
        "[time]\nepoch = \"2s\"\nallowed_lateness = \"5s\"",
        "time.allowed_lateness",
        "\"5s\" is not a multiple of the epoch (2s)",
    );
}

#[test]
fn lateness_slack_and_restatement_horizon_have_a_ceiling() {
    assert_refused("[time]\nallowed_lateness = \"400d\"", "time.allowed_lateness", "allowed_lateness \"400d\" is longer than 366d");
    assert_refused("[time]\nwatermark_slack = \"400d\"", "time.watermark_slack", "watermark_slack \"400d\" is longer than 366d");
    assert_refused("[late]\nrestate_within = \"400d\"", "late.restate_within", "restate_within \"400d\" is longer than 366d");
}

#[test]
fn dedup_horizon_has_a_floor_and_a_ceiling() {
    assert_refused("[dedup]\nhorizon = \"500ms\"", "dedup.horizon", "horizon \"500ms\" is shorter than 1s");
    assert_refused("[dedup]\nhorizon = \"8d\"", "dedup.horizon", "horizon \"8d\" is longer than 7d");
}

// --- windows ---

#[test]
fn windows_must_be_whole_minutes() {
    assert_refused("[windows]\nsizes = [\"1m\", \"90s\"]", "windows.sizes", "window \"90s\" is not a multiple of 1m");
}

#[test]
fn windows_must_include_one_minute() {
    let reason = "windows must include \"1m\" (every window is built from 1m windows)";
    assert_refused("[windows]\nsizes = [\"5m\"]", "windows.sizes", reason);
    assert_refused("[windows]\nsizes = []", "windows.sizes", reason);
}

#[test]
fn windows_are_at_most_a_day() {
    assert_refused("[windows]\nsizes = [\"1m\", \"2d\"]", "windows.sizes", "window \"2d\" is longer than 1d");
}

#[test]
fn windows_are_listed_once() {
    assert_refused("[windows]\nsizes = [\"1m\", \"5m\", \"60s\"]", "windows.sizes", "window \"60s\" is listed twice (as 1m)");
    assert_refused("[windows]\nsizes = [\"1m\", \"0m\"]", "windows.sizes", "window \"0m\" must be positive");
}

#[test]
fn early_results_have_a_floor() {
    assert_refused("[windows]\nearly_results = \"50ms\"", "windows.early_results", "\"50ms\" is shorter than 100ms");
}

// --- aggregate ---

#[test]
fn group_by_is_a_nonempty_set_of_key_types() {
    assert_refused("[aggregate]\ngroup_by = []", "aggregate.group_by", "must list at least one of ad | campaign | advertiser");
    assert_refused(
        "[aggregate]\ngroup_by = [\"ad\", \"country\"]",
        "aggregate.group_by",
        "\"country\" is not one of ad | campaign | advertiser",
    );
    assert_refused("[aggregate]\ngroup_by = [\"ad\", \"ad\"]", "aggregate.group_by", "\"ad\" is listed twice");
}

#[test]
fn measures_must_include_clicks() {
    assert_refused("[aggregate]\nmeasures = [\"distinct_users\"]", "aggregate.measures", "must include \"clicks\" (it is always counted)");
    assert_refused(
        "[aggregate]\nmeasures = [\"clicks\", \"views\"]",
        "aggregate.measures",
        "\"views\" is not one of clicks | distinct_users",
    );
    assert_refused("[aggregate]\nmeasures = [\"clicks\", \"clicks\"]", "aggregate.measures", "\"clicks\" is listed twice");
}

// --- late ---

#[test]
fn late_policy_must_be_known() {
    assert_refused("[late]\npolicy = \"drop\"", "late.policy", "\"drop\" is not one of restate | hold");
}

#[test]
fn restate_within_must_exceed_allowed_lateness() {
    assert_refused("[late]\nrestate_within = \"10s\"", "late.restate_within", "\"10s\" must be longer than time.allowed_lateness (10s)");
}

#[test]
fn restate_within_must_be_whole_epochs() {
    assert_refused(
        "[time]\nepoch = \"2s\"\n[late]\nrestate_within = \"61s\"",
        "late.restate_within",
        "\"61s\" is not a multiple of the epoch (2s)",
    );
}

// --- catalog ---

#[test]
fn catalog_must_exist_at_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("job.toml");
    std::fs::write(&file, "[catalog]\npath = \"ads.csv\"\n").expect("write job");
    let err = load(&file).expect_err("catalog is missing");
    let catalog = dir.path().join("ads.csv");
    assert_eq!(err.to_string(), format!("{}: key 'catalog.path': file not found: {}", file.display(), catalog.display()));
    std::fs::write(&catalog, "ad_id,campaign_id,advertiser_id,valid_from\n").expect("write catalog");
    assert_eq!(load(&file).expect("catalog exists").catalog, Some(catalog));
}

#[test]
fn retention_ages_parse_and_are_checked() {
    let job = parse_ok("[retention]\nlog = \"3d\"\nrows = \"365d\"");
    assert_eq!((job.log_retention_ms, job.rows_retention_ms), (3 * 86_400_000, 365 * 86_400_000));
    assert_refused(
        "[retention]\nlog = \"10s\"",
        "retention.log",
        "\"10s\" is shorter than the dedup horizon (1m): recovery re-reads that much of the log",
    );
    // Against the job's own horizon, not the default one.
    assert_refused(
        "[dedup]\nhorizon = \"3d\"\n[retention]\nlog = \"2d\"",
        "retention.log",
        "\"2d\" is shorter than the dedup horizon (3d): recovery re-reads that much of the log",
    );
    assert_eq!(parse_ok("[dedup]\nhorizon = \"3d\"\n[retention]\nlog = \"3d\"").log_retention_ms, 3 * 86_400_000);
    assert_refused("[retention]\nrows = 0", "retention.rows", "0 keeps no rows");
    assert_refused("[retention]\nsegments = \"1d\"", "retention.segments", "unknown key");
}

#[test]
fn settings_spell_key_types_as_the_job_file_does() {
    let mut job = Job::defaults(std::path::Path::new("j.toml"));
    job.group_by = vec![KeyType::Ad, KeyType::Advertiser];
    job.late = LatePolicy::Hold;
    let settings = job.settings(None);
    assert_eq!(settings.group_by, ["ad", "advertiser"]);
    assert_eq!(settings.restate_within_ms, None);
}
