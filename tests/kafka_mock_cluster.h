// librdkafka's in-process mock cluster (rdkafka_mock.h: the real Kafka
// protocol over TCP on loopback), for the Kafka source's unit tests and the
// end-to-end tests of the binary.
#ifndef INVARIANTD_TESTS_KAFKA_MOCK_CLUSTER_H_
#define INVARIANTD_TESTS_KAFKA_MOCK_CLUSTER_H_

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <string>

#include "gtest/gtest.h"

namespace invariantd {

// A log callback that drops librdkafka's logs (expected broker errors).
inline void QuietKafkaLog(const rd_kafka_t*, int, const char*, const char*) {}

// A mock cluster with 3 brokers on loopback.
class MockCluster {
 public:
  MockCluster() {
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, &QuietKafkaLog);
    char errstr[256];
    rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    EXPECT_NE(rk_, nullptr) << errstr;
    if (rk_ != nullptr) mc_ = rd_kafka_mock_cluster_new(rk_, 3);
    EXPECT_NE(mc_, nullptr);
  }
  ~MockCluster() {
    if (mc_ != nullptr) rd_kafka_mock_cluster_destroy(mc_);
    if (rk_ != nullptr) rd_kafka_destroy(rk_);
  }
  MockCluster(const MockCluster&) = delete;
  MockCluster& operator=(const MockCluster&) = delete;

  rd_kafka_mock_cluster_t* cluster() { return mc_; }
  std::string bootstraps() const {
    return rd_kafka_mock_cluster_bootstraps(mc_);
  }
  void CreateTopic(const std::string& topic, int partitions) {
    ASSERT_EQ(rd_kafka_mock_topic_create(mc_, topic.c_str(), partitions, 1),
              RD_KAFKA_RESP_ERR_NO_ERROR);
  }

 private:
  rd_kafka_t* rk_ = nullptr;
  rd_kafka_mock_cluster_t* mc_ = nullptr;
};

}  // namespace invariantd

#endif  // INVARIANTD_TESTS_KAFKA_MOCK_CLUSTER_H_
