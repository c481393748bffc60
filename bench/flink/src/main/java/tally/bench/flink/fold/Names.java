package tally.bench.flink.fold;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/**
 * Interns ad and campaign ids read from message bytes: the same bytes give the same String
 * object without allocating, so the fold's hash maps find their entry by a cached hash and an
 * identity check. Up to {@link #MAX_NAMES} names are kept; past that, each lookup of a new name
 * allocates.
 */
final class Names {
  static final int MAX_NAMES = 1 << 20;

  private byte[][] keys = new byte[1 << 14][];
  private String[] values = new String[1 << 14];
  private int size;

  String intern(byte[] buf, int from, int to) {
    int hash = hash(buf, from, to);
    int mask = keys.length - 1;
    for (int slot = hash & mask; ; slot = (slot + 1) & mask) {
      byte[] key = keys[slot];
      if (key == null) {
        String name = new String(buf, from, to - from, StandardCharsets.UTF_8);
        if (size < MAX_NAMES) {
          keys[slot] = Arrays.copyOfRange(buf, from, to);
          values[slot] = name;
          if (++size * 2 > keys.length) {
            grow();
          }
        }
        return name;
      }
      if (same(key, buf, from, to)) {
        return values[slot];
      }
    }
  }

  /** A plain loop: ids are short, where Arrays.equals's vectorized setup does not pay. */
  private static boolean same(byte[] key, byte[] buf, int from, int to) {
    if (key.length != to - from) {
      return false;
    }
    for (int i = 0; i < key.length; i++) {
      if (key[i] != buf[from + i]) {
        return false;
      }
    }
    return true;
  }

  private static int hash(byte[] buf, int from, int to) {
    int h = 0x811c9dc5;
    for (int i = from; i < to; i++) {
      h = (h ^ buf[i]) * 0x01000193;
    }
    return h ^ (h >>> 16);
  }

  private void grow() {
    byte[][] oldKeys = keys;
    String[] oldValues = values;
    keys = new byte[oldKeys.length * 2][];
    values = new String[oldKeys.length * 2];
    int mask = keys.length - 1;
    for (int i = 0; i < oldKeys.length; i++) {
      if (oldKeys[i] != null) {
        int slot = hash(oldKeys[i], 0, oldKeys[i].length) & mask;
        while (keys[slot] != null) {
          slot = (slot + 1) & mask;
        }
        keys[slot] = oldKeys[i];
        values[slot] = oldValues[i];
      }
    }
  }
}
