package tally.bench.flink.fold;

import org.apache.flink.api.java.functions.KeySelector;

/** The key of a partial's roll-up: "key type/key". */
public final class PartialKey implements KeySelector<Partial, String> {
  private static final long serialVersionUID = 1L;

  @Override
  public String getKey(Partial partial) {
    return partial.keyType + "/" + partial.key;
  }
}
