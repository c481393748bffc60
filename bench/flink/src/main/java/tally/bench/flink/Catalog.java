package tally.bench.flink;

import java.util.HashMap;
import java.util.Map;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * tally's generated ad catalog as an in-memory lookup: ad {@code i} belongs to campaign {@code
 * cmp-<i mod 1000>}, campaign {@code c} to advertiser {@code adv-<c mod 100>}, the viral ad to
 * {@code cmp-0000} / {@code adv-000}; every 97th ad (indices 96, 193, ...) is missing, and its
 * clicks count under {@code unknown}. The functions take and return Flink's internal string
 * form, so a lookup is one hash probe with no conversion.
 */
public final class Catalog {
  public static final int CAMPAIGNS = 1_000;
  public static final int ADVERTISERS = 100;
  public static final int GAP_EVERY = 97;
  public static final StringData UNKNOWN = StringData.fromString("unknown");

  private Catalog() {}

  /** Ad name to {campaign, advertiser}. */
  static Map<StringData, StringData[]> build(int ads) {
    Map<StringData, StringData[]> map = new HashMap<>(2 * ads);
    for (int ad = 0; ad < ads; ad++) {
      if (ad % GAP_EVERY == GAP_EVERY - 1) {
        continue;
      }
      int campaign = ad % CAMPAIGNS;
      map.put(StringData.fromString(ClickGen.adName(ad)), entry(campaign, campaign % ADVERTISERS));
    }
    map.put(StringData.fromString(ClickGen.adName(ClickGen.VIRAL)), entry(0, 0));
    return map;
  }

  private static StringData[] entry(int campaign, int advertiser) {
    return new StringData[] {
      StringData.fromString(String.format("cmp-%04d", campaign)),
      StringData.fromString(String.format("adv-%03d", advertiser))
    };
  }

  /** {@code campaign_of(ad_id)}. */
  public static final class CampaignOf extends ScalarFunction {
    private transient Map<StringData, StringData[]> map;

    public @DataTypeHint(value = "STRING", bridgedTo = StringData.class) StringData eval(
        @DataTypeHint(value = "STRING", bridgedTo = StringData.class) StringData ad) {
      if (map == null) {
        map = build(ClickGen.withDefaults(1, 0, 1).ads);
      }
      StringData[] entry = map.get(ad);
      return entry == null ? UNKNOWN : entry[0];
    }
  }

  /** {@code advertiser_of(ad_id)}. */
  public static final class AdvertiserOf extends ScalarFunction {
    private transient Map<StringData, StringData[]> map;

    public @DataTypeHint(value = "STRING", bridgedTo = StringData.class) StringData eval(
        @DataTypeHint(value = "STRING", bridgedTo = StringData.class) StringData ad) {
      if (map == null) {
        map = build(ClickGen.withDefaults(1, 0, 1).ads);
      }
      StringData[] entry = map.get(ad);
      return entry == null ? UNKNOWN : entry[1];
    }
  }
}
