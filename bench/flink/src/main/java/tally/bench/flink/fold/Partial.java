package tally.bench.flink.fold;

import tally.bench.flink.HllUsers;

/**
 * The clicks of one key (an ad, a campaign or an advertiser) in one minute of event time as one
 * source subtask folded them: a count and a HyperLogLog sketch of the users. A Flink POJO: it
 * crosses the shuffle to the roll-up.
 */
public final class Partial {
  /** "ad", "campaign" or "advertiser". */
  public String keyType;

  public String key;
  /** Start of the minute, ms. */
  public long minute;

  public long clicks;
  public HllUsers.Acc users;

  public Partial() {}

  Partial(String keyType, String key, long minute, long clicks, HllUsers.Acc users) {
    this.keyType = keyType;
    this.key = key;
    this.minute = minute;
    this.clicks = clicks;
    this.users = users;
  }
}
