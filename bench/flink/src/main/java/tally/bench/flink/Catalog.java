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

  /** Ad name to {campaign, advertiser}, as plain strings. */
  public static Map<String, String[]> names(int ads) {
    Map<String, String[]> map = new HashMap<>(2 * ads);
    for (int ad = 0; ad < ads; ad++) {
      if (ad % GAP_EVERY == GAP_EVERY - 1) {
        continue;
      }
      int campaign = ad % CAMPAIGNS;
      map.put(ClickGen.adName(ad), new String[] {campaignName(campaign), advertiserName(campaign % ADVERTISERS)});
    }
    map.put(ClickGen.adName(ClickGen.VIRAL), new String[] {campaignName(0), advertiserName(0)});
    return map;
  }

  /** Campaign name to advertiser name, for clicks that name their campaign. */
  public static Map<String, String> advertisers() {
    Map<String, String> map = new HashMap<>(2 * CAMPAIGNS);
    for (int campaign = 0; campaign < CAMPAIGNS; campaign++) {
      map.put(campaignName(campaign), advertiserName(campaign % ADVERTISERS));
    }
    return map;
  }

  private static String campaignName(int campaign) {
    return String.format("cmp-%04d", campaign);
  }

  private static String advertiserName(int advertiser) {
    return String.format("adv-%03d", advertiser);
  }

  /** Ad name to {campaign, advertiser}, in Flink's internal string form. */
  static Map<StringData, StringData[]> build(int ads) {
    Map<StringData, StringData[]> map = new HashMap<>(2 * ads);
    names(ads).forEach((ad, entry) ->
        map.put(StringData.fromString(ad), new StringData[] {StringData.fromString(entry[0]), StringData.fromString(entry[1])}));
    return map;
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
