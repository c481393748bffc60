package tally.bench.flink;

import java.io.IOException;
import java.lang.management.GarbageCollectorMXBean;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

/** What a benchmark run measures about its own JVM and the machine, shared by the jobs. */
public final class JvmStats {
  private JvmStats() {}

  /**
   * CPU time of the job's task threads (named {@code "... (i/p)#attempt"}), sampled every 20 ms
   * while they live: the work of the operators, without planning, JIT compilation or GC threads.
   */
  public static final class TaskCpu extends Thread {
    private static final java.util.regex.Pattern TASK = java.util.regex.Pattern.compile(".* \\(\\d+/\\d+\\)#\\d+$");
    private final java.lang.management.ThreadMXBean threads = ManagementFactory.getThreadMXBean();
    private final Map<Long, Long> cpuById = new java.util.HashMap<>();
    private volatile boolean running = true;

    public TaskCpu() {
      super("task-cpu-sampler");
      setDaemon(true);
    }

    @Override
    public void run() {
      while (running) {
        sample();
        try {
          Thread.sleep(20);
        } catch (InterruptedException e) {
          return;
        }
      }
    }

    private synchronized void sample() {
      for (java.lang.management.ThreadInfo info : threads.getThreadInfo(threads.getAllThreadIds())) {
        if (info != null && TASK.matcher(info.getThreadName()).matches()) {
          long nanos = threads.getThreadCpuTime(info.getThreadId());
          if (nanos > 0) {
            cpuById.merge(info.getThreadId(), nanos, Math::max);
          }
        }
      }
    }

    /** Seconds of task CPU seen. */
    public synchronized double finish() {
      running = false;
      sample();
      return cpuById.values().stream().mapToLong(Long::longValue).sum() / 1e9;
    }
  }

  public static long processCpuNanos() {
    if (ManagementFactory.getOperatingSystemMXBean() instanceof com.sun.management.OperatingSystemMXBean os) {
      return os.getProcessCpuTime();
    }
    return 0;
  }

  public static double gcSeconds() {
    long millis = 0;
    for (GarbageCollectorMXBean gc : ManagementFactory.getGarbageCollectorMXBeans()) {
      millis += Math.max(0, gc.getCollectionTime());
    }
    return millis / 1e3;
  }

  /**
   * Busy time of all cores so far from /proc/stat, in jiffies (1/100 s), or -1 where it is
   * missing: with this process's CPU time it gives the load other processes put on the machine.
   */
  public static long machineBusyJiffies() {
    try {
      String[] fields = Files.readAllLines(Path.of("/proc/stat")).get(0).trim().split("\\s+");
      // cpu user nice system idle iowait irq softirq steal ...
      long busy = 0;
      for (int i : new int[] {1, 2, 3, 6, 7, 8}) {
        busy += Long.parseLong(fields[i]);
      }
      return busy;
    } catch (IOException | RuntimeException e) {
      return -1;
    }
  }

  /** VmHWM of this process, or -1 where /proc is missing. */
  public static long peakRssMib() {
    try {
      for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
        if (line.startsWith("VmHWM:")) {
          return Long.parseLong(line.replaceAll("[^0-9]", "")) / 1024;
        }
      }
    } catch (IOException | NumberFormatException e) {
      return -1;
    }
    return -1;
  }
}
