package tally.bench.flink.fold;

/**
 * One click as read from a message of the topic: the ad (and the campaign, when the message names
 * one), event time, the user as a 64-bit hash and the request id as two longs. A Flink POJO.
 */
public final class Click {
  public String ad;
  /** The message's {@code campaign_id}, or null: the catalog decides. */
  public String campaign;

  public long ts;
  public long user;
  public long idHi;
  public long idLo;

  public Click() {}
}
