package tally.bench.flink.kafka;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.util.Collector;
import org.apache.kafka.clients.consumer.ConsumerRecord;

import tally.bench.flink.fold.Click;
import tally.bench.flink.fold.ClickJson;

/**
 * Turns each Kafka message into a {@link Click} in the source reader's thread; a value that does
 * not parse is counted and dropped (tally's source refuses it too). Records the next offset of
 * each partition for the harness's lag samples.
 */
public final class ClickDecoder implements KafkaRecordDeserializationSchema<Click> {
  private static final long serialVersionUID = 1L;

  private transient ClickJson json;

  @Override
  public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<Click> out) {
    if (json == null) {
      json = new ClickJson();
      Counters.FIRST_RECORD_NANOS.accumulateAndGet(System.nanoTime(), Math::min);
    }
    Counters.RECORDS.increment();
    Counters.consumed(record.partition(), record.offset());
    Click click = new Click();
    if (json.read(record.value(), click)) {
      out.collect(click);
    } else {
      Counters.REJECTED.increment();
    }
  }

  @Override
  public TypeInformation<Click> getProducedType() {
    return TypeInformation.of(Click.class);
  }
}
