package tally.bench.flink.fold;

import tally.bench.flink.ClickGen;

/**
 * The request ids a source subtask has seen within the dedup horizon: two generations of an
 * open-addressing set of 128-bit ids. The current generation takes new ids; when the subtask's
 * event time (the largest timestamp seen) moves a horizon past the generation's start, the
 * previous generation is dropped and the current one becomes it. An id is so remembered for at
 * least a horizon of event time after it was first seen, and at most two.
 *
 * <p>The source hands every copy of a request to the same subtask (a Kafka topic partitioned by
 * request id; a generator or file split that keeps a request's copies together): the set needs
 * no shuffle and no keyed state.
 */
final class RequestIds {
  private final long horizonMs;
  /** A new generation's slots: ~1M ids before the first doubling. */
  private static final int INITIAL_CAPACITY = 1 << 21;

  private Table current = new Table(INITIAL_CAPACITY);
  private Table previous = new Table(1 << 4);
  private long generationStart = Long.MIN_VALUE;

  RequestIds(long horizonMs) {
    this.horizonMs = horizonMs;
  }

  /** Adds an id seen at event time {@code ts}; false when it was seen before (a retry). */
  boolean add(long hi, long lo, long ts) {
    if (generationStart == Long.MIN_VALUE) {
      generationStart = ts;
    } else if (ts - generationStart >= horizonMs) {
      previous = current;
      current = new Table(Math.max(INITIAL_CAPACITY, previous.capacity()));
      generationStart = ts;
    }
    return !previous.contains(hi, lo) && current.add(hi, lo);
  }

  /** Ids remembered now. */
  long size() {
    return current.size + previous.size;
  }

  /** Checkpointed form: the generation start and the ids of both generations, pairs of longs. */
  public static final class Snapshot {
    public long generationStart;
    public long[] current;
    public long[] previous;

    public Snapshot() {}
  }

  Snapshot snapshot() {
    Snapshot s = new Snapshot();
    s.generationStart = generationStart;
    s.current = current.pairs();
    s.previous = previous.pairs();
    return s;
  }

  void restore(Snapshot s) {
    generationStart = Math.max(generationStart, s.generationStart);
    for (int i = 0; i < s.previous.length; i += 2) {
      previous.add(s.previous[i], s.previous[i + 1]);
    }
    for (int i = 0; i < s.current.length; i += 2) {
      current.add(s.current[i], s.current[i + 1]);
    }
  }

  /** Linear probing over pairs of longs; the all-zero id is kept aside. */
  private static final class Table {
    private long[] slots;
    private int mask;
    private int size;
    private boolean zero;

    Table(int capacity) {
      slots = new long[2 * capacity];
      mask = capacity - 1;
    }

    int capacity() {
      return mask + 1;
    }

    private static int slot(long hi, long lo) {
      return (int) ClickGen.mix64(hi ^ Long.rotateLeft(lo, 32));
    }

    boolean contains(long hi, long lo) {
      if ((hi | lo) == 0) {
        return zero;
      }
      for (int s = slot(hi, lo) & mask; ; s = (s + 1) & mask) {
        long h = slots[2 * s];
        long l = slots[2 * s + 1];
        if ((h | l) == 0) {
          return false;
        }
        if (h == hi && l == lo) {
          return true;
        }
      }
    }

    /** False when the id is there already. */
    boolean add(long hi, long lo) {
      if ((hi | lo) == 0) {
        boolean added = !zero;
        zero = true;
        return added;
      }
      for (int s = slot(hi, lo) & mask; ; s = (s + 1) & mask) {
        long h = slots[2 * s];
        long l = slots[2 * s + 1];
        if ((h | l) == 0) {
          slots[2 * s] = hi;
          slots[2 * s + 1] = lo;
          if (++size * 2 > capacity()) {
            grow();
          }
          return true;
        }
        if (h == hi && l == lo) {
          return false;
        }
      }
    }

    private void grow() {
      long[] old = slots;
      slots = new long[old.length * 2];
      mask = capacity() * 2 - 1;
      for (int i = 0; i < old.length; i += 2) {
        if ((old[i] | old[i + 1]) != 0) {
          int s = slot(old[i], old[i + 1]) & mask;
          while ((slots[2 * s] | slots[2 * s + 1]) != 0) {
            s = (s + 1) & mask;
          }
          slots[2 * s] = old[i];
          slots[2 * s + 1] = old[i + 1];
        }
      }
    }

    long[] pairs() {
      long[] out = new long[2 * size + (zero ? 2 : 0)];
      int at = 0;
      for (int i = 0; i < slots.length; i += 2) {
        if ((slots[i] | slots[i + 1]) != 0) {
          out[at++] = slots[i];
          out[at++] = slots[i + 1];
        }
      }
      return out;
    }
  }
}
