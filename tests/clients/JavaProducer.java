// The reference client for the Kafka listener's tests: kafka-clients 4.x with its defaults (idempotent, acks=all).
// Run as a single source file: java -cp 'build/apache-kafka/lib/*' JavaProducer.java BOOTSTRAP TOPIC COUNT
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class JavaProducer {
    public static void main(String[] arguments) throws Exception {
        Properties properties = new Properties();
        properties.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, arguments[0]);
        properties.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        properties.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        properties.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, arguments.length > 3 ? arguments[3] : "none");
        String topic = arguments[1];
        int count = Integer.parseInt(arguments[2]);
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(properties)) {
            for (int index = 0; index < count; index++) {
                ProducerRecord<byte[], byte[]> record = new ProducerRecord<>(topic, index % 2,
                        1_700_000_000_000L + index, bytes("key-" + index), bytes("java-" + index));
                record.headers().add("client", bytes("java")).add("index", bytes(Integer.toString(index)));
                sent.add(producer.send(record));
            }
            for (Future<RecordMetadata> future : sent) {
                RecordMetadata metadata = future.get();
                System.out.println(metadata.partition() + " " + metadata.offset());
            }
        }
    }

    private static byte[] bytes(String text) {
        return text.getBytes(StandardCharsets.UTF_8);
    }
}
