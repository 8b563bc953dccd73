/*
 * home_v5.c - the seed's home-heating controller on MQTT 5: user properties pick the
 * callback, message expiry drops stale readings.
 *
 * A sensor client publishes room temperatures on home/<room>/temperature. Each reading
 * carries a user property "unit" ("C" or "F") and a Message Expiry Interval. The
 * controller registers, on one subscription, three PUBLISH callbacks the seed's way:
 *   - a specific callback (priority 10) whose condition is unit == "F": converts, decides;
 *   - a specific callback (priority 5) whose condition is unit == "C": decides;
 *   - the generic callback: a reading without a unit is reported and ignored.
 * Before the controller subscribes, the sensor leaves two retained readings: the hall's
 * expires after 1 s, the porch's after an hour. The controller subscribes 2 s later: the
 * broker drops the expired hall reading and delivers the porch's with what is left of
 * its expiry (a Message Expiry Interval below 3600).
 *
 * Both clients speak MQTT 5 (mqtt_client_set_protocol). The program checks what it
 * printed and exits 0 when every decision was made by the right callback.
 *
 * Usage: home_v5 [host] [port]      (defaults: localhost 1883)
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mqtt.h>

#define TARGET_C 20.0

static int celsius_decisions, fahrenheit_decisions, without_unit, hall_seen, porch_seen;
static int failures;

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "FAIL: %s\n", what);
        failures++;
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The value of user property `key` of the message, or NULL. Not NUL-terminated. */
static const char *user_property(const mqtt_message *m, const char *key, size_t *len)
{
    const char *k, *v;
    size_t k_len, v_len;
    size_t n = mqtt_properties_count(m->properties, MQTT_PROP_USER_PROPERTY);
    for (size_t i = 0; i < n; i++) {
        if (mqtt_properties_get_user_at(m->properties, i, &k, &k_len, &v, &v_len) == MQTT_OK &&
            k_len == strlen(key) && memcmp(k, key, k_len) == 0) {
            *len = v_len;
            return v;
        }
    }
    return NULL;
}

static bool unit_is(const mqtt_data *data, const char *unit)
{
    size_t len;
    const char *v;
    if (!data->message)
        return false;
    v = user_property(data->message, "unit", &len);
    return v && len == strlen(unit) && memcmp(v, unit, len) == 0;
}

static bool in_celsius(const mqtt_data *data, void *user_data)
{
    (void)user_data;
    return unit_is(data, "C");
}

static bool in_fahrenheit(const mqtt_data *data, void *user_data)
{
    (void)user_data;
    return unit_is(data, "F");
}

/* "home/<room>/temperature" -> room; the reading as a number. */
static void parse(const mqtt_message *m, char *room, size_t room_size, double *value)
{
    char text[32];
    const char *start = m->topic + strlen("home/");
    const char *end = strchr(start, '/');
    size_t n = end ? (size_t)(end - start) : strlen(start);
    if (n >= room_size)
        n = room_size - 1;
    memcpy(room, start, n);
    room[n] = '\0';
    n = m->payload_len < sizeof text - 1 ? m->payload_len : sizeof text - 1;
    memcpy(text, m->payload, n);
    text[n] = '\0';
    *value = strtod(text, NULL);
}

static void decide(const mqtt_message *m, const char *room, double celsius)
{
    uint32_t expiry = 0;
    int has_expiry =
        mqtt_properties_get_int(m->properties, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, &expiry) ==
        MQTT_OK;
    printf("controller: %s %.1fC -> heating %s%s", room, celsius,
           celsius < TARGET_C ? "ON" : "OFF", m->retain ? " (retained" : "");
    if (m->retain && has_expiry)
        printf(", expires in %us", (unsigned)expiry);
    printf("%s\n", m->retain ? ")" : "");
    if (strcmp(room, "hall") == 0)
        hall_seen++;
    if (strcmp(room, "porch") == 0) {
        porch_seen++;
        check(m->retain && has_expiry && expiry <= 3600 && expiry > 3590,
              "the porch's retained reading comes with what is left of its hour");
    }
}

static void on_celsius(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    char room[32];
    double value;
    (void)client;
    (void)user_data;
    parse(data->message, room, sizeof room, &value);
    celsius_decisions++;
    decide(data->message, room, value);
}

static void on_fahrenheit(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    char room[32];
    double value;
    (void)client;
    (void)user_data;
    parse(data->message, room, sizeof room, &value);
    fahrenheit_decisions++;
    decide(data->message, room, (value - 32.0) * 5.0 / 9.0);
}

static void on_other(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)user_data;
    if (data->message) {
        without_unit++;
        printf("controller: %s has no unit: ignored\n", data->message->topic);
    }
}

static mqtt_client *v5_client(const char *id, const char *host, long port)
{
    mqtt_client *c = mqtt_client_new(id, true);
    int rc;
    if (!c)
        return NULL;
    rc = mqtt_client_set_protocol(c, MQTT_PROTOCOL_V5);
    if (rc == MQTT_OK)
        rc = mqtt_client_connect(c, host, 30, (uint16_t)port);
    if (rc != MQTT_OK) {
        fprintf(stderr, "%s: connect: %s\n", id, mqtt_strerror(rc));
        mqtt_client_free(c);
        return NULL;
    }
    return c;
}

/* Publish one reading with its unit (NULL: none) and expiry, QoS 1; wait for PUBACK. */
static int acked;
static void on_puback(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)data;
    (void)user_data;
    acked++;
}

static void reading(mqtt_client *sensor, const char *room, const char *value, const char *unit,
                    uint32_t expiry_s, bool retain)
{
    char topic[64];
    mqtt_properties *props = mqtt_properties_new();
    int before = acked;
    double deadline;
    check(props != NULL, "mqtt_properties_new");
    if (!props)
        return;
    snprintf(topic, sizeof topic, "home/%s/temperature", room);
    if (unit)
        check(mqtt_properties_add_user(props, "unit", unit) == MQTT_OK, "add the unit");
    check(mqtt_properties_add_int(props, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, expiry_s) == MQTT_OK,
          "add the expiry");
    check(mqtt_client_publish_v5(sensor, topic, value, strlen(value), 1, retain, props) > 0,
          "publish a reading");
    mqtt_properties_free(props);
    deadline = now_s() + 10;
    while (acked == before && now_s() < deadline)
        mqtt_client_loop(sensor, 50);
    check(acked > before, "the reading was acknowledged");
}

int main(int argc, char **argv)
{
    const char *host = argc > 1 ? argv[1] : "localhost";
    long port = argc > 2 ? strtol(argv[2], NULL, 10) : 1883;
    mqtt_client *sensor = v5_client("home-v5-sensor", host, port);
    mqtt_client *controller = v5_client("home-v5-controller", host, port);
    double deadline;
    if (!sensor || !controller) {
        mqtt_client_free(sensor);
        mqtt_client_free(controller);
        return 1;
    }
    check(mqtt_client_on(sensor, MQTT_PUBACK, on_puback, NULL, 0, NULL) == MQTT_OK, "on PUBACK");

    /* Retained readings left before the controller subscribes. */
    reading(sensor, "hall", "18.0", "C", 1, true);
    reading(sensor, "porch", "8.5", "C", 3600, true);

    check(mqtt_client_on(controller, MQTT_PUBLISH, on_fahrenheit, in_fahrenheit, 10, NULL) ==
              MQTT_OK,
          "register the Fahrenheit callback");
    check(mqtt_client_on(controller, MQTT_PUBLISH, on_celsius, in_celsius, 5, NULL) == MQTT_OK,
          "register the Celsius callback");
    check(mqtt_client_on(controller, MQTT_PUBLISH, on_other, NULL, 0, NULL) == MQTT_OK,
          "register the generic callback");

    /* Let the hall's reading expire, then subscribe. */
    deadline = now_s() + 2.0;
    while (now_s() < deadline) {
        mqtt_client_loop(sensor, 50);
        mqtt_client_loop(controller, 50);
    }
    mqtt_subscription_v5 readings = {"home/+/temperature", 1, false, false, 0};
    check(mqtt_client_subscribe_v5(controller, &readings, 1, NULL) > 0, "subscribe");
    deadline = now_s() + 10;
    while (porch_seen == 0 && now_s() < deadline)
        mqtt_client_loop(controller, 50);

    reading(sensor, "kitchen", "17.5", "C", 60, false);
    reading(sensor, "bedroom", "71.6", "F", 60, false); /* 22.0C */
    reading(sensor, "garage", "9", NULL, 60, false);
    deadline = now_s() + 10;
    while (celsius_decisions + fahrenheit_decisions + without_unit < 4 && now_s() < deadline)
        mqtt_client_loop(controller, 50);

    check(hall_seen == 0, "the expired retained reading was not delivered");
    check(porch_seen == 1, "the retained reading within its expiry was delivered");
    check(celsius_decisions == 2, "two readings in Celsius (porch, kitchen)");
    check(fahrenheit_decisions == 1, "one reading in Fahrenheit (bedroom)");
    check(without_unit == 1, "one reading without a unit (garage)");

    /* Clear the retained readings for the next run against the same broker. */
    mqtt_client_publish(sensor, "home/porch/temperature", NULL, 0, 0, true);
    mqtt_client_publish(sensor, "home/hall/temperature", NULL, 0, 0, true);
    mqtt_client_disconnect(sensor);
    mqtt_client_disconnect(controller);
    mqtt_client_free(sensor);
    mqtt_client_free(controller);
    printf("home_v5: %s\n", failures ? "FAILED" : "every reading went to the right callback");
    return failures ? 1 : 0;
}
