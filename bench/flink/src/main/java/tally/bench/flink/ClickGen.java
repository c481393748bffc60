package tally.bench.flink;

import java.io.Serializable;

/**
 * The click stream of tally's seeded generator, in shape: every click is a pure function of its
 * output position, so parallel readers can each produce an interleaved share of one stream
 * without coordinating, and a retry can be regenerated from its original's position.
 *
 * <p>Click at position {@code n} (0-based):
 *
 * <ul>
 *   <li><b>Stream clock.</b> {@code startMs + n * 1000 / ratePerS}: event time advances at the
 *       configured rate.
 *   <li><b>Ad.</b> With probability {@code viralShare} the viral ad ({@link #VIRAL}); otherwise
 *       ad index {@code rank - 1} with Zipf({@code zipfExponent}) popularity over {@code ads}
 *       ranks (index 0 most popular), sampled from a cumulative table through a guide table.
 *   <li><b>User.</b> {@code min(a, b)} of two uniform draws over {@code users}: a mild skew.
 *   <li><b>Time.</b> The stream clock minus a uniform jitter in {@code 0..=jitterMs}; a {@code
 *       tooLateShare} of clicks is instead {@code tooLateByMs ± tooLateByMs/8} behind it.
 *   <li><b>Request id.</b> 128 random bits.
 *   <li><b>Retries.</b> With probability {@code duplicateRate / (1 + duplicateRate)} the position
 *       carries a retry instead of a fresh click: an identical copy (same request id, time, user
 *       and ad) of the click 2 to {@code maxRetryDelay} positions earlier (log-uniform-ish delay),
 *       where {@code maxRetryDelay} is 2 s of stream time, at most 4096 positions. So duplicates
 *       make up the same share of the output as in tally's generator.
 * </ul>
 *
 * <p>Not modelled: tally's idle partitions (this source has no log partitions) and its exact
 * byte stream (its PRNG sequence differs; the distributions are the same).
 */
public final class ClickGen implements Serializable {
  private static final long serialVersionUID = 1L;

  /** Ad index of the viral ad. */
  public static final int VIRAL = -1;

  public static final int MAX_RETRY_DELAY_CLICKS = 4096;
  public static final int MIN_RETRY_DELAY_CLICKS = 2;
  public static final long MAX_RETRY_DELAY_MS = 2000;

  public final long seed;
  public final long clicks;
  public final int ads;
  public final long users;
  public final double zipfExponent;
  public final double viralShare;
  public final double duplicateRate;
  public final long jitterMs;
  public final double tooLateShare;
  public final long tooLateByMs;
  public final long ratePerS;
  public final long startMs;

  private final long maxRetryDelay;
  private final long viralBelow;
  private final long retryBelow;
  private final long tooLateBelow;
  /** Zipf cumulative bounds over 63-bit draws; the last is Long.MAX_VALUE. */
  private final long[] bounds;
  /** Guide table: first rank whose bound exceeds the start of each bucket of draws. */
  private final int[] guide;

  private final int bucketShift;

  public ClickGen(
      long seed,
      long clicks,
      int ads,
      long users,
      double zipfExponent,
      double viralShare,
      double duplicateRate,
      long jitterMs,
      double tooLateShare,
      long tooLateByMs,
      long ratePerS,
      long startMs) {
    if (clicks < 0 || ads < 1 || users < 1 || ratePerS < 1 || jitterMs < 0 || tooLateByMs < 0) {
      throw new IllegalArgumentException("clicks >= 0, ads, users, rate >= 1, jitter and lateness >= 0");
    }
    for (double share : new double[] {viralShare, duplicateRate, tooLateShare}) {
      if (!(share >= 0 && share < 1)) {
        throw new IllegalArgumentException("shares must lie in [0, 1), got " + share);
      }
    }
    this.seed = seed;
    this.clicks = clicks;
    this.ads = ads;
    this.users = users;
    this.zipfExponent = zipfExponent;
    this.viralShare = viralShare;
    this.duplicateRate = duplicateRate;
    this.jitterMs = jitterMs;
    this.tooLateShare = tooLateShare;
    this.tooLateByMs = tooLateByMs;
    this.ratePerS = ratePerS;
    this.startMs = startMs;
    this.maxRetryDelay =
        Math.max(MIN_RETRY_DELAY_CLICKS, Math.min(MAX_RETRY_DELAY_CLICKS, ratePerS * MAX_RETRY_DELAY_MS / 1000));
    this.viralBelow = threshold(viralShare);
    this.retryBelow = threshold(duplicateRate / (1 + duplicateRate));
    this.tooLateBelow = threshold(tooLateShare);

    double[] weights = new double[ads];
    double total = 0;
    for (int rank = 1; rank <= ads; rank++) {
      weights[rank - 1] = Math.pow(rank, -zipfExponent);
      total += weights[rank - 1];
    }
    bounds = new long[ads];
    double cumulative = 0;
    for (int i = 0; i < ads; i++) {
      cumulative += weights[i];
      bounds[i] = (long) (cumulative / total * 0x1p63);
    }
    bounds[ads - 1] = Long.MAX_VALUE;
    int buckets = Math.max(2, Integer.highestOneBit(ads - 1) << 1);
    bucketShift = 63 - Integer.numberOfTrailingZeros(buckets);
    guide = new int[buckets + 1];
    int at = 0;
    for (int b = 0; b < buckets; b++) {
      long start = (long) b << bucketShift;
      while (bounds[at] <= start) {
        at++;
      }
      guide[b] = at;
    }
    guide[buckets] = ads - 1;
  }

  /** tally's defaults (GeneratorConfig) with the given size, rate and seed. */
  public static ClickGen withDefaults(long seed, long clicks, long ratePerS) {
    return new ClickGen(seed, clicks, 10_000, 1_000_000, 1.1, 0.4, 0.02, 3_000, 0.001, 120_000, ratePerS, 1_767_225_600_000L);
  }

  private static long threshold(double share) {
    return (long) (share * 0x1p63);
  }

  /** SplitMix64's finalizer. */
  public static long mix64(long z) {
    z = (z ^ (z >>> 30)) * 0xbf58476d1ce4e5b9L;
    z = (z ^ (z >>> 27)) * 0x94d049bb133111ebL;
    return z ^ (z >>> 31);
  }

  /** Stream clock at position {@code n}. */
  public long streamTimeMs(long n) {
    return startMs + (n / ratePerS) * 1000 + (n % ratePerS) * 1000 / ratePerS;
  }

  /** One generated click; fields are overwritten by {@link #fill}. */
  public static final class Click {
    /** Ad index, or {@link #VIRAL}. */
    public int ad;

    public long ts;
    public long user;
    public long requestHi;
    public long requestLo;
    /** Whether this position carries a retry of an earlier click. */
    public boolean retry;
    /** Whether the click was stamped too far behind the stream clock (tooLateShare). */
    public boolean tooLate;
  }

  /** Writes the click at position {@code n} into {@code out}. */
  public void fill(long n, Click out) {
    fillFrom(n, origin(n), out);
  }

  /**
   * The position whose fresh click position {@code n} carries: {@code n} itself, or, for a
   * retry, the first position of its request (a retry repeats an earlier position, which may
   * itself be a retry of an earlier one). Cheaper than {@link #fill}: no fresh click is drawn.
   */
  public long origin(long n) {
    long origin = n;
    while (true) {
      long state = mix64(seed * 0x9e3779b97f4a7c15L + origin);
      long draw = mix64(state += 0x9e3779b97f4a7c15L) >>> 1;
      if (draw >= retryBelow || origin < MIN_RETRY_DELAY_CLICKS) {
        return origin;
      }
      long span = maxRetryDelay - MIN_RETRY_DELAY_CLICKS;
      long bits = 64 - Long.numberOfLeadingZeros(span);
      long shift = below(mix64(state += 0x9e3779b97f4a7c15L), bits + 1);
      long delay = MIN_RETRY_DELAY_CLICKS + (below(mix64(state + 0x9e3779b97f4a7c15L), span + 1) >>> shift);
      if (delay > origin) {
        return origin;
      }
      origin -= delay;
    }
  }

  /** Writes the click at position {@code n}, whose {@link #origin} is {@code origin}, into {@code out}. */
  public void fillFrom(long n, long origin, Click out) {
    fresh(origin, out);
    out.retry = origin != n;
  }

  /** The fresh click drawn for position {@code n} (ignoring whether {@code n} carries a retry). */
  private void fresh(long n, Click out) {
    // Draw 0 decides retry or not (see fill); the fresh click uses draws 4.. of the position.
    long state = mix64(seed * 0x9e3779b97f4a7c15L + n) + 4 * 0x9e3779b97f4a7c15L;
    long viral = mix64(state += 0x9e3779b97f4a7c15L) >>> 1;
    if (viral < viralBelow) {
      out.ad = VIRAL;
    } else {
      out.ad = rank(mix64(state += 0x9e3779b97f4a7c15L) >>> 1);
    }
    long a = below(mix64(state += 0x9e3779b97f4a7c15L), users);
    long b = below(mix64(state += 0x9e3779b97f4a7c15L), users);
    out.user = Math.min(a, b);
    long now = streamTimeMs(n);
    long late = mix64(state += 0x9e3779b97f4a7c15L) >>> 1;
    if (late < tooLateBelow) {
      long spread = tooLateByMs / 8;
      long behind = tooLateByMs - spread + below(mix64(state += 0x9e3779b97f4a7c15L), 2 * spread + 1);
      out.ts = Math.max(0, now - behind);
      out.tooLate = true;
    } else {
      out.tooLate = false;
      out.ts = Math.max(0, now - below(mix64(state += 0x9e3779b97f4a7c15L), jitterMs + 1));
    }
    out.requestHi = mix64(state += 0x9e3779b97f4a7c15L);
    out.requestLo = mix64(state + 0x9e3779b97f4a7c15L);
  }

  /** Uniform in {@code 0..n} ({@code n >= 1}): the high word of the unsigned product. */
  private static long below(long draw, long n) {
    return Math.multiplyHigh(draw, n) + ((draw >> 63) & n);
  }

  /** 0-based Zipf rank of a 63-bit uniform draw. */
  private int rank(long draw) {
    int bucket = (int) (draw >>> bucketShift);
    int low = guide[bucket];
    int high = guide[bucket + 1];
    while (low < high) {
      int mid = (low + high) >>> 1;
      if (bounds[mid] <= draw) {
        low = mid + 1;
      } else {
        high = mid;
      }
    }
    return low;
  }

  /** {@code ad-<index>} with six digits, or {@code ad-viral}. */
  public static String adName(int ad) {
    return ad == VIRAL ? "ad-viral" : String.format("ad-%06d", ad);
  }
}
