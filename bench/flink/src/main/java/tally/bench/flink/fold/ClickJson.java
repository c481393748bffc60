package tally.bench.flink.fold;

import tally.bench.flink.ClickGen;

/**
 * Reads a message value, a flat JSON object as tally's ingest writes it:
 *
 * <pre>
 * {"ad_id":"ad-000001","timestamp":1767225599031,"user_key":"9f3c0a1b2c3d4e5f","request_id":"83cb6702-89d0-4e11-8be7-092645f884ed"}
 * </pre>
 *
 * <p>A foreign producer may send {@code "user_id":"u-1"} instead of {@code user_key} (hashed
 * here), and an optional {@code "campaign_id"}. Fields come in any order; unknown fields with
 * string, number, boolean or null values are skipped. One pass over the bytes, no tree and no
 * String but the interned ids. A value that is not such an object, lacks a field, or has a
 * field that does not parse (a {@code user_key} of other than 16 hex digits, a {@code
 * request_id} that is not 8-4-4-4-12 hex, an id with an escape) is refused: {@link #read}
 * returns false.
 */
public final class ClickJson {
  private final Names names = new Names();
  private byte[] b;
  private int at;
  private int end;

  /** Reads a whole message value into {@code out}; false when it is refused. */
  public boolean read(byte[] value, Click out) {
    return value != null && read(value, 0, value.length, out);
  }

  /** Reads the value in {@code buf[start, stop)} (a line of an NDJSON file) into {@code out}. */
  public boolean read(byte[] buf, int start, int stop, Click out) {
    b = buf;
    at = start;
    end = stop;
    out.ad = null;
    out.campaign = null;
    boolean ts = false;
    boolean user = false;
    boolean id = false;
    if (!skipTo('{')) {
      return false;
    }
    ws();
    if (at < end && b[at] == '}') {
      return false;
    }
    while (true) {
      ws();
      int keyFrom = stringStart();
      if (keyFrom < 0) {
        return false;
      }
      int keyTo = stringEnd();
      if (keyTo < 0 || !skipTo(':')) {
        return false;
      }
      ws();
      switch (field(keyFrom, keyTo)) {
        case AD -> {
          out.ad = id();
          if (out.ad == null) {
            return false;
          }
        }
        case CAMPAIGN -> {
          if (!literal("null")) {
            out.campaign = id();
            if (out.campaign == null) {
              return false;
            }
          }
        }
        case TIMESTAMP -> {
          long t = number();
          if (t < 0) {
            return false;
          }
          out.ts = t;
          ts = true;
        }
        case USER_KEY -> {
          int from = stringStart();
          int to = from < 0 ? -1 : stringEnd();
          if (to - from != 16) {
            return false;
          }
          long key = hex(from, to);
          if (key == -1 && !allF(from, to)) {
            return false;
          }
          out.user = key;
          user = true;
        }
        case USER_ID -> {
          int from = stringStart();
          int to = from < 0 ? -1 : stringEnd();
          if (to < 0) {
            return false;
          }
          out.user = hashBytes(from, to);
          user = true;
        }
        case REQUEST_ID -> {
          int from = stringStart();
          int to = from < 0 ? -1 : stringEnd();
          if (to - from != 36 || !uuid(from, out)) {
            return false;
          }
          id = true;
        }
        default -> {
          if (!skipValue()) {
            return false;
          }
        }
      }
      ws();
      if (at >= end) {
        return false;
      }
      byte c = b[at++];
      if (c == '}') {
        break;
      }
      if (c != ',') {
        return false;
      }
    }
    return out.ad != null && ts && user && id;
  }

  private static final int OTHER = 0;
  private static final int AD = 1;
  private static final int TIMESTAMP = 2;
  private static final int USER_KEY = 3;
  private static final int USER_ID = 4;
  private static final int REQUEST_ID = 5;
  private static final int CAMPAIGN = 6;
  /** The fields by name length: the six names have six lengths, so one compare decides. */
  private static final byte[][] BY_LENGTH = new byte[12][];
  private static final int[] FIELD_BY_LENGTH = new int[12];

  static {
    String[] names = {null, "ad_id", "timestamp", "user_key", "user_id", "request_id", "campaign_id"};
    for (int f = 1; f < names.length; f++) {
      int n = names[f].length();
      if (BY_LENGTH[n] != null) {
        throw new IllegalStateException("two field names of length " + n);
      }
      BY_LENGTH[n] = names[f].getBytes(java.nio.charset.StandardCharsets.US_ASCII);
      FIELD_BY_LENGTH[n] = f;
    }
  }

  private int field(int from, int to) {
    int n = to - from;
    if (n >= BY_LENGTH.length || BY_LENGTH[n] == null) {
      return OTHER;
    }
    byte[] name = BY_LENGTH[n];
    for (int i = 0; i < n; i++) {
      if (b[from + i] != name[i]) {
        return OTHER;
      }
    }
    return FIELD_BY_LENGTH[n];
  }

  private void ws() {
    while (at < end && (b[at] == ' ' || b[at] == '\n' || b[at] == '\r' || b[at] == '\t')) {
      at++;
    }
  }

  private boolean skipTo(char c) {
    ws();
    if (at < end && b[at] == c) {
      at++;
      return true;
    }
    return false;
  }

  /** At an opening quote: steps over it and returns where the string starts, else -1. */
  private int stringStart() {
    if (at < end && b[at] == '"') {
      return ++at;
    }
    return -1;
  }

  /** Returns where the string ends (its closing quote), stepping past it; -1 on an escape. */
  private int stringEnd() {
    for (int i = at; i < end; i++) {
      byte c = b[i];
      if (c == '"') {
        at = i + 1;
        return i;
      }
      if (c == '\\' || (c >= 0 && c < 0x20)) {
        return -1;
      }
    }
    return -1;
  }

  /** An ad or campaign id: a non-empty string without escapes, interned. */
  private String id() {
    int from = stringStart();
    int to = from < 0 ? -1 : stringEnd();
    if (to <= from) {
      return null;
    }
    return names.intern(b, from, to);
  }

  /** A non-negative integer of at most 18 digits, else -1. */
  private long number() {
    long n = 0;
    int from = at;
    while (at < end && b[at] >= '0' && b[at] <= '9' && at - from < 18) {
      n = n * 10 + (b[at++] - '0');
    }
    if (at == from || (at < end && (b[at] == '.' || b[at] == 'e' || b[at] == 'E' || (b[at] >= '0' && b[at] <= '9')))) {
      return -1;
    }
    return n;
  }

  private boolean literal(String word) {
    int n = word.length();
    if (end - at < n) {
      return false;
    }
    for (int i = 0; i < n; i++) {
      if (b[at + i] != word.charAt(i)) {
        return false;
      }
    }
    at += n;
    return true;
  }

  private boolean skipValue() {
    if (at >= end) {
      return false;
    }
    byte c = b[at];
    if (c == '"') {
      // Escapes allowed in fields this reader does not use.
      for (int i = at + 1; i < end; i++) {
        if (b[i] == '\\') {
          i++;
        } else if (b[i] == '"') {
          at = i + 1;
          return true;
        }
      }
      return false;
    }
    if (literal("null") || literal("true") || literal("false")) {
      return true;
    }
    int from = at;
    while (at < end && (b[at] == '-' || b[at] == '+' || b[at] == '.' || b[at] == 'e' || b[at] == 'E' || (b[at] >= '0' && b[at] <= '9'))) {
      at++;
    }
    return at > from;
  }

  private static int hexDigit(byte c) {
    if (c >= '0' && c <= '9') {
      return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
      return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
      return c - 'A' + 10;
    }
    return -1;
  }

  /** Up to 16 hex digits as a long; -1 (also the value of 16 f's) when one is not a digit. */
  private long hex(int from, int to) {
    long v = 0;
    for (int i = from; i < to; i++) {
      int d = hexDigit(b[i]);
      if (d < 0) {
        return -1;
      }
      v = (v << 4) | d;
    }
    return v;
  }

  private boolean allF(int from, int to) {
    for (int i = from; i < to; i++) {
      if (b[i] != 'f' && b[i] != 'F') {
        return false;
      }
    }
    return true;
  }

  /** 8-4-4-4-12 hex digits into two longs. */
  private boolean uuid(int from, Click out) {
    long hi = 0;
    long lo = 0;
    int digits = 0;
    for (int i = from; i < from + 36; i++) {
      byte c = b[i];
      int pos = i - from;
      if (pos == 8 || pos == 13 || pos == 18 || pos == 23) {
        if (c != '-') {
          return false;
        }
        continue;
      }
      int d = hexDigit(c);
      if (d < 0) {
        return false;
      }
      if (digits < 16) {
        hi = (hi << 4) | d;
      } else {
        lo = (lo << 4) | d;
      }
      digits++;
    }
    out.idHi = hi;
    out.idLo = lo;
    return true;
  }

  /** A raw {@code user_id}: FNV-1a over its bytes, then SplitMix64's finalizer. */
  private long hashBytes(int from, int to) {
    long h = 0xcbf29ce484222325L;
    for (int i = from; i < to; i++) {
      h = (h ^ (b[i] & 0xff)) * 0x100000001b3L;
    }
    return ClickGen.mix64(h);
  }
}
