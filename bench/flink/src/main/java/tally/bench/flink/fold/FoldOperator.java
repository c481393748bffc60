package tally.bench.flink.fold;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.runtime.state.StateInitializationContext;
import org.apache.flink.runtime.state.StateSnapshotContext;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;

import tally.bench.flink.Catalog;
import tally.bench.flink.ClickGen;
import tally.bench.flink.HllUsers;

/**
 * Chained to the source, in the reader's task: drops retries (request ids seen within the dedup
 * horizon, {@link RequestIds}; the source hands every copy of a request to one reader) and
 * clicks too late for their minute, and folds every other click into its (ad, minute) partial:
 * one hash lookup, one increment, one sketch update; the ad's campaign and advertiser are looked
 * up once per (ad, minute), when its fold is made. When the watermark passes a minute's end it
 * sends that minute's partials on, per ad and, merged here first, per campaign and per
 * advertiser, stamped with the minute's last millisecond; so a click costs one fold, and the
 * shuffle carries partials, not clicks. With a horizon of 0 it does not dedup: the clicks come
 * deduplicated, from a keyed dedup before it.
 *
 * <p>Checkpoints: before a barrier the open minutes' partials are sent on too (the roll-up
 * merges several partials of a minute alike), so the operator's only state is the set of
 * request ids, kept as operator state. Restoring at another parallelism would move partitions
 * or splits away from their ids; the job is run at one parallelism.
 */
public final class FoldOperator extends AbstractStreamOperator<Partial> implements OneInputStreamOperator<Click, Partial> {
  private static final long serialVersionUID = 1L;
  static final long MINUTE_MS = 60_000;

  private final long horizonMs;
  /** Ad to {campaign, advertiser}, or null for tally's generated catalog ({@link Catalog}). */
  private final HashMap<String, String[]> catalogOverride;

  private transient RequestIds ids;
  private transient ListState<RequestIds.Snapshot> idState;
  private transient Map<String, String[]> catalog;
  private transient Map<String, String> advertiserOfCampaign;
  /** Open minutes: start → fold key → fold. */
  private transient TreeMap<Long, Map<String, Fold>> minutes;
  private transient long lastMinute;
  private transient Map<String, Fold> lastFolds;
  private transient long watermark;
  private transient long duplicates;
  private transient long tooLate;
  private transient StreamRecord<Partial> record;

  /** Dedups within {@code horizonMs} (0: no dedup here) and attributes by tally's generated catalog. */
  public FoldOperator(long horizonMs) {
    this(horizonMs, null);
  }

  /** As {@link #FoldOperator(long)}, with the catalog {@code ad -> {campaign, advertiser}} if not null. */
  public FoldOperator(long horizonMs, Map<String, String[]> catalog) {
    if (horizonMs < 0) {
      throw new IllegalArgumentException("horizon >= 0");
    }
    this.horizonMs = horizonMs;
    this.catalogOverride = catalog == null ? null : new HashMap<>(catalog);
  }

  /** One (ad, minute)'s clicks so far, with the ad's campaign and advertiser. */
  private static final class Fold {
    final String ad;
    final String campaign;
    final String advertiser;
    long clicks;
    final HllUsers.Acc users = new HllUsers.Acc();

    Fold(String ad, String campaign, String advertiser) {
      this.ad = ad;
      this.campaign = campaign;
      this.advertiser = advertiser;
    }
  }

  @Override
  public void initializeState(StateInitializationContext context) throws Exception {
    super.initializeState(context);
    ids = horizonMs == 0 ? null : new RequestIds(horizonMs);
    if (ids == null) {
      return;
    }
    idState = context.getOperatorStateStore().getListState(new ListStateDescriptor<>("request-ids", RequestIds.Snapshot.class));
    for (RequestIds.Snapshot snapshot : idState.get()) {
      ids.restore(snapshot);
    }
  }

  @Override
  public void open() throws Exception {
    super.open();
    if (catalogOverride == null) {
      catalog = GeneratedCatalog.names(ClickGen.withDefaults(1, 0, 1).ads);
      advertiserOfCampaign = GeneratedCatalog.advertisers();
    } else {
      catalog = catalogOverride;
      advertiserOfCampaign = new HashMap<>();
      catalog.values().forEach(entry -> advertiserOfCampaign.putIfAbsent(entry[0], entry[1]));
    }
    minutes = new TreeMap<>();
    lastMinute = Long.MIN_VALUE;
    watermark = Long.MIN_VALUE;
    record = new StreamRecord<>(null);
  }

  @Override
  public void processElement(StreamRecord<Click> element) {
    Click click = element.getValue();
    if (ids != null && !ids.add(click.idHi, click.idLo, click.ts)) {
      duplicates++;
      return;
    }
    long minute = Math.floorDiv(click.ts, MINUTE_MS) * MINUTE_MS;
    if (minute + MINUTE_MS - 1 <= watermark) {
      tooLate++;
      return;
    }
    Map<String, Fold> folds = lastFolds;
    if (minute != lastMinute) {
      folds = minutes.computeIfAbsent(minute, m -> new HashMap<>(1 << 14));
      lastMinute = minute;
      lastFolds = folds;
    }
    String key = click.campaign == null ? click.ad : click.ad + '\n' + click.campaign;
    Fold fold = folds.get(key);
    if (fold == null) {
      fold = newFold(click);
      folds.put(key, fold);
    }
    fold.clicks++;
    HllUsers.addUser(fold.users, click.user);
  }

  private Fold newFold(Click click) {
    String[] entry = catalog.get(click.ad);
    if (click.campaign != null) {
      return new Fold(click.ad, click.campaign, advertiserOfCampaign.getOrDefault(click.campaign, "unknown"));
    }
    return entry == null ? new Fold(click.ad, "unknown", "unknown") : new Fold(click.ad, entry[0], entry[1]);
  }

  @Override
  public void processWatermark(Watermark mark) throws Exception {
    watermark = mark.getTimestamp();
    emitThrough(watermark);
    super.processWatermark(mark);
  }

  @Override
  public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
    super.prepareSnapshotPreBarrier(checkpointId);
    emitThrough(Long.MAX_VALUE);
  }

  @Override
  public void snapshotState(StateSnapshotContext context) throws Exception {
    super.snapshotState(context);
    if (ids != null) {
      idState.update(List.of(ids.snapshot()));
    }
  }

  @Override
  public void notifyCheckpointComplete(long checkpointId) throws Exception {
    super.notifyCheckpointComplete(checkpointId);
    FoldStats.CHECKPOINTS.accumulateAndGet(checkpointId, Math::max);
  }

  @Override
  public void finish() throws Exception {
    emitThrough(Long.MAX_VALUE);
    FoldStats.DUPLICATES.add(duplicates);
    FoldStats.TOO_LATE.add(tooLate);
    duplicates = tooLate = 0;
    super.finish();
  }

  /** Sends on the partials of every minute whose last millisecond is at or before {@code time}. */
  private void emitThrough(long time) {
    Iterator<Map.Entry<Long, Map<String, Fold>>> open = minutes.entrySet().iterator();
    while (open.hasNext()) {
      Map.Entry<Long, Map<String, Fold>> entry = open.next();
      long minute = entry.getKey();
      long last = minute + MINUTE_MS - 1;
      if (time != Long.MAX_VALUE && last > time) {
        break;
      }
      emitMinute(minute, entry.getValue().values());
      open.remove();
      if (minute == lastMinute) {
        lastMinute = Long.MIN_VALUE;
        lastFolds = null;
      }
    }
  }

  private void emitMinute(long minute, Iterable<Fold> folds) {
    Map<String, Partial> campaigns = new HashMap<>();
    Map<String, Partial> advertisers = new HashMap<>();
    List<Partial> ads = new ArrayList<>();
    for (Fold fold : folds) {
      ads.add(new Partial("ad", fold.ad, minute, fold.clicks, fold.users));
      rollInto(campaigns, "campaign", fold.campaign, minute, fold);
      rollInto(advertisers, "advertiser", fold.advertiser, minute, fold);
    }
    record.setTimestamp(minute + MINUTE_MS - 1);
    // Ads sharing a key (an ad under two campaigns) are merged downstream like any partials.
    for (Partial p : ads) {
      output.collect(record.replace(p));
    }
    for (Partial p : campaigns.values()) {
      output.collect(record.replace(p));
    }
    for (Partial p : advertisers.values()) {
      output.collect(record.replace(p));
    }
  }

  private static void rollInto(Map<String, Partial> into, String keyType, String key, long minute, Fold fold) {
    Partial p = into.get(key);
    if (p == null) {
      p = new Partial(keyType, key, minute, 0, new HllUsers.Acc());
      into.put(key, p);
    }
    p.clicks += fold.clicks;
    HllUsers.mergeInto(p.users, fold.users);
  }
}
