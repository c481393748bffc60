package tally.bench.flink.fold;

/** A final window row: clicks and distinct users of one key in one window. A Flink POJO. */
public final class Row {
  /** "1m", "5m" or "1h". */
  public String size;

  public String keyType;
  public String key;
  public long windowStart;
  public long clicks;
  public long distinctUsers;

  public Row() {}

  Row(String size, String keyType, String key, long windowStart, long clicks, long distinctUsers) {
    this.size = size;
    this.keyType = keyType;
    this.key = key;
    this.windowStart = windowStart;
    this.clicks = clicks;
    this.distinctUsers = distinctUsers;
  }
}
