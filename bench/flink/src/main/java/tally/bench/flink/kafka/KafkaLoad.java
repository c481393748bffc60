package tally.bench.flink.kafka;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

import tally.bench.flink.ClickGen;

/**
 * Loads a topic with N generated clicks (the distributions of {@code tally gen}, {@link
 * ClickGen}), as tally's ingest writes them: the value is the click as JSON with the user as a
 * 16-hex-digit {@code user_key}, the key its request id, so Kafka's default partitioner (murmur2
 * of the key) sends every copy of a request to the same partition. Retries are byte-identical
 * copies. The topic is created when missing.
 *
 * <pre>
 * --bootstrap HOSTS    default 127.0.0.1:9092
 * --topic T            default raw_clicks
 * --clicks N           default 5000000
 * --partitions P       when creating the topic, default 8
 * --replication R      when creating the topic, default min(3, brokers)
 * --rate-per-s R       event-time rate, default 1000000
 * --seed S             default 1
 * --user-id            send "user_id":"u-N" (a foreign producer) instead of user_key
 * --compression C      producer compression, default none (as tally's ingest)
 * </pre>
 *
 * <p>Prints {@code load ...: value} lines: clicks, seconds, clicks/s, bytes of values.
 */
public final class KafkaLoad {
  private KafkaLoad() {}

  public static void main(String[] args) throws Exception {
    String bootstrap = "127.0.0.1:9092";
    String topic = "raw_clicks";
    long clicks = 5_000_000;
    int partitions = 8;
    int replication = -1;
    long rate = 1_000_000;
    long seed = 1;
    boolean userId = false;
    // tally's ingest (librdkafka's default) writes uncompressed batches.
    String compression = "none";
    for (int i = 0; i < args.length; i++) {
      String arg = args[i];
      switch (arg) {
        case "--bootstrap" -> bootstrap = value(args, ++i, arg);
        case "--topic" -> topic = value(args, ++i, arg);
        case "--clicks" -> clicks = Long.parseLong(value(args, ++i, arg));
        case "--partitions" -> partitions = Integer.parseInt(value(args, ++i, arg));
        case "--replication" -> replication = Integer.parseInt(value(args, ++i, arg));
        case "--rate-per-s" -> rate = Long.parseLong(value(args, ++i, arg));
        case "--seed" -> seed = Long.parseLong(value(args, ++i, arg));
        case "--user-id" -> userId = true;
        case "--compression" -> compression = value(args, ++i, arg);
        default -> throw new IllegalArgumentException("unknown argument " + arg
            + "\nusage: KafkaLoad [--bootstrap HOSTS] [--topic T] [--clicks N] [--partitions P] [--replication R]"
            + " [--rate-per-s R] [--seed S] [--user-id] [--compression C]");
      }
    }
    ensureTopic(bootstrap, topic, partitions, replication);

    Properties props = new Properties();
    props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    props.put(ProducerConfig.ACKS_CONFIG, "all");
    props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
    props.put(ProducerConfig.LINGER_MS_CONFIG, "20");
    props.put(ProducerConfig.BATCH_SIZE_CONFIG, Integer.toString(512 * 1024));
    props.put(ProducerConfig.BUFFER_MEMORY_CONFIG, Long.toString(256L << 20));
    props.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, compression);
    ClickGen gen = ClickGen.withDefaults(seed, clicks, rate);
    byte[][] adNames = new byte[gen.ads][];
    for (int ad = 0; ad < gen.ads; ad++) {
      adNames[ad] = ClickGen.adName(ad).getBytes(StandardCharsets.US_ASCII);
    }
    byte[] viral = ClickGen.adName(ClickGen.VIRAL).getBytes(StandardCharsets.US_ASCII);
    AtomicReference<Exception> failure = new AtomicReference<>();
    Json json = new Json();
    ClickGen.Click click = new ClickGen.Click();
    long bytes = 0;
    long start = System.nanoTime();
    try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(props, new ByteArraySerializer(), new ByteArraySerializer())) {
      for (long n = 0; n < clicks && failure.get() == null; n++) {
        gen.fill(n, click);
        byte[] key = json.uuid(click.requestHi, click.requestLo);
        byte[] value = json.click(click.ad == ClickGen.VIRAL ? viral : adNames[click.ad], click, key, userId, seed);
        bytes += value.length;
        // No record timestamp: the broker's clock, so that retention never takes event time
        // (2026-01-01 here) for the age of the data.
        producer.send(new ProducerRecord<>(topic, key, value), (metadata, error) -> {
          if (error != null) {
            failure.compareAndSet(null, error);
          }
        });
      }
      producer.flush();
    }
    if (failure.get() != null) {
      throw failure.get();
    }
    double seconds = (System.nanoTime() - start) / 1e9;
    System.out.println("load clicks: " + clicks);
    System.out.printf("load s: %.2f%n", seconds);
    System.out.printf("load clicks/s: %.0f%n", clicks / seconds);
    System.out.println("load value bytes: " + bytes);
  }

  private static void ensureTopic(String bootstrap, String topic, int partitions, int replication) throws Exception {
    Properties props = new Properties();
    props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    try (Admin admin = Admin.create(props)) {
      Set<String> topics = admin.listTopics().names().get(30, TimeUnit.SECONDS);
      if (topics.contains(topic)) {
        return;
      }
      int brokers = admin.describeCluster().nodes().get(30, TimeUnit.SECONDS).size();
      short rf = (short) (replication > 0 ? replication : Math.min(3, brokers));
      admin.createTopics(List.of(new NewTopic(topic, partitions, rf))).all().get(30, TimeUnit.SECONDS);
      System.out.println("load created topic " + topic + ": " + partitions + " partitions, replication " + rf);
    }
  }

  /** Renders messages into a reused buffer; each message is a fresh copy (the producer keeps it). */
  private static final class Json {
    private static final byte[] HEX = "0123456789abcdef".getBytes(StandardCharsets.US_ASCII);
    private final byte[] buf = new byte[512];
    private int at;

    /** A request id as tally writes it: 8-4-4-4-12 lower-case hex, version 4 and variant bits set. */
    byte[] uuid(long hi, long lo) {
      hi = (hi & ~0xf000L) | 0x4000L;
      lo = (lo & 0x3fffffffffffffffL) | 0x8000000000000000L;
      byte[] out = new byte[36];
      int j = 0;
      for (int i = 0; i < 32; i++) {
        if (i == 8 || i == 12 || i == 16 || i == 20) {
          out[j++] = '-';
        }
        long word = i < 16 ? hi : lo;
        out[j++] = HEX[(int) (word >>> (60 - 4 * (i % 16))) & 0xf];
      }
      return out;
    }

    byte[] click(byte[] ad, ClickGen.Click click, byte[] requestId, boolean userId, long seed) {
      at = 0;
      put("{\"ad_id\":\"");
      put(ad);
      put("\",\"timestamp\":");
      put(Long.toString(click.ts));
      if (userId) {
        put(",\"user_id\":\"u-");
        put(Long.toString(click.user));
      } else {
        // A stand-in for tally's keyed hash of the user id.
        put(",\"user_key\":\"");
        long key = ClickGen.mix64(click.user ^ ClickGen.mix64(seed));
        for (int shift = 60; shift >= 0; shift -= 4) {
          buf[at++] = HEX[(int) (key >>> shift) & 0xf];
        }
      }
      put("\",\"request_id\":\"");
      put(requestId);
      put("\"}");
      return Arrays.copyOf(buf, at);
    }

    private void put(byte[] bytes) {
      System.arraycopy(bytes, 0, buf, at, bytes.length);
      at += bytes.length;
    }

    private void put(String ascii) {
      for (int i = 0; i < ascii.length(); i++) {
        buf[at++] = (byte) ascii.charAt(i);
      }
    }
  }

  private static String value(String[] args, int i, String flag) {
    if (i >= args.length) {
      throw new IllegalArgumentException(flag + " needs a value");
    }
    return args[i];
  }
}
