/*
 * A program using libmqtt the way a downstream project would: built by
 * tests/cmake_consumer/CMakeLists.txt (add_subdirectory or find_package) and by
 * `cc main.c $(pkg-config --cflags --libs mqtt)`; see run.sh. No broker needed.
 */
#include <mqtt.h>

#include <stdio.h>
#include <string.h>

static int failures;

static void check(int ok, const char *what)
{
    printf("%s %s\n", ok ? "ok  " : "FAIL", what);
    if (!ok)
        failures++;
}

int main(void)
{
    mqtt_client *client = mqtt_client_new("cmake-consumer", true);
    const char *msg;

    check(client != NULL, "mqtt_client_new");
    check(strcmp(mqtt_version(), MQTT_VERSION_STRING) == 0,
          "mqtt_version() matches the header's MQTT_VERSION_STRING");
    check(mqtt_topic_matches("home/+", "home/kitchen"), "home/+ matches home/kitchen");
    check(!mqtt_topic_matches("home/+", "home/kitchen/oven"), "home/+ does not match deeper");
    check(mqtt_topic_matches("#", "a/b/c"), "# matches everything");
    msg = mqtt_strerror(MQTT_ERR_INVALID_ARGUMENT);
    check(msg != NULL && msg[0] != '\0', "mqtt_strerror(MQTT_ERR_INVALID_ARGUMENT)");
    check(mqtt_strerror(MQTT_OK) != NULL, "mqtt_strerror(MQTT_OK)");
    check(mqtt_client_publish(client, "a/+", "x", 1, 0, false) == MQTT_ERR_INVALID_TOPIC,
          "publishing to a wildcard topic is refused");
    check(mqtt_client_on(client, MQTT_PUBLISH, NULL, NULL, 0, NULL) ==
              MQTT_ERR_INVALID_ARGUMENT,
          "mqtt_client_on without a function is refused");
    mqtt_client_free(client);
    mqtt_client_free(NULL);

    printf("libmqtt %s: %s\n", mqtt_version(), failures ? "FAILED" : "all good");
    return failures ? 1 : 0;
}
