package tally.bench.flink.fold;

import java.util.HashMap;
import java.util.Map;

import tally.bench.flink.Catalog;
import tally.bench.flink.ClickGen;

/**
 * The names of tally's generated ads and catalog, {@link ClickGen#adName} and {@link
 * Catalog#names}, made without {@code String.format}: its 40,000 calls took about a second of a
 * cold JVM in every fold's start-up. Same strings, same map.
 */
public final class GeneratedCatalog {
  private GeneratedCatalog() {}

  /** {@code prefix} and {@code n} in at least {@code width} digits, zero-padded. */
  static String padded(String prefix, int n, int width) {
    String digits = Integer.toString(n);
    StringBuilder out = new StringBuilder(prefix.length() + Math.max(width, digits.length())).append(prefix);
    for (int i = digits.length(); i < width; i++) {
      out.append('0');
    }
    return out.append(digits).toString();
  }

  /** {@link ClickGen#adName}. */
  public static String adName(int ad) {
    return ad == ClickGen.VIRAL ? "ad-viral" : padded("ad-", ad, 6);
  }

  /** {@link Catalog#names}: ad name to {campaign, advertiser}. */
  public static Map<String, String[]> names(int ads) {
    String[] campaigns = new String[Catalog.CAMPAIGNS];
    String[] advertisers = new String[Catalog.ADVERTISERS];
    for (int c = 0; c < campaigns.length; c++) {
      campaigns[c] = padded("cmp-", c, 4);
    }
    for (int a = 0; a < advertisers.length; a++) {
      advertisers[a] = padded("adv-", a, 3);
    }
    Map<String, String[]> map = new HashMap<>(2 * ads);
    for (int ad = 0; ad < ads; ad++) {
      if (ad % Catalog.GAP_EVERY == Catalog.GAP_EVERY - 1) {
        continue;
      }
      int campaign = ad % Catalog.CAMPAIGNS;
      map.put(adName(ad), new String[] {campaigns[campaign], advertisers[campaign % Catalog.ADVERTISERS]});
    }
    map.put(adName(ClickGen.VIRAL), new String[] {campaigns[0], advertisers[0]});
    return map;
  }

  /** {@link Catalog#advertisers}: campaign name to advertiser name. */
  public static Map<String, String> advertisers() {
    Map<String, String> map = new HashMap<>(2 * Catalog.CAMPAIGNS);
    for (int c = 0; c < Catalog.CAMPAIGNS; c++) {
      map.put(padded("cmp-", c, 4), padded("adv-", c % Catalog.ADVERTISERS, 3));
    }
    return map;
  }
}
