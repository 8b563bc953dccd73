/*
 * relay_poll.c - two clients and a timer in one thread, driven by the
 * program's own poll() loop: no thread of the library's.
 *
 * Client "in" is connected to broker 1 and subscribed to relay/in/#; every
 * message it gets is republished, same QoS, by client "out" on broker 2 as
 * relay/out/...; client "out" is subscribed to relay/out/# and counts what
 * arrives. The program's own timer publishes COUNT messages of each QoS on
 * broker 1, one per tick.
 *
 * usage: relay_poll [host1] [port1] [host2] [port2] [count]
 *        (defaults: localhost 1883 localhost 1883 10)
 * Exits 0 once every message arrived on broker 2 with its QoS.
 */
#define _POSIX_C_SOURCE 200809L

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mqtt.h>

#define TICK_MS 5

struct relay {
    mqtt_client *in;
    mqtt_client *out;
    int relayed;
    int arrived[3]; /* per QoS, on broker 2 */
    int subacks;
    int failed;
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool from_broker_1(const mqtt_data *data, void *user_data)
{
    (void)user_data;
    return data->message != NULL && strncmp(data->message->topic, "relay/in/", 9) == 0;
}

/* Runs inside client "in"'s callback: publishing on "out" is allowed there. */
static void relay_message(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    struct relay *r = user_data;
    const mqtt_message *m = data->message;
    char topic[256];
    (void)client;
    snprintf(topic, sizeof topic, "relay/out/%s", m->topic + 9);
    if (mqtt_client_publish(r->out, topic, m->payload, m->payload_len, m->qos, false) < 0)
        r->failed = 1;
    else
        r->relayed++;
}

static void count_arrival(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    struct relay *r = user_data;
    (void)client;
    if (data->message != NULL && data->message->qos <= 2)
        r->arrived[data->message->qos]++;
}

static void on_connack(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    struct relay *r = user_data;
    mqtt_subscription sub;
    (void)data;
    sub.qos = 2;
    sub.topic = client == r->in ? "relay/in/#" : "relay/out/#";
    if (mqtt_client_subscribe(client, &sub, 1) < 0)
        r->failed = 1;
}

static void on_suback(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    struct relay *r = user_data;
    (void)client;
    (void)data;
    r->subacks++;
}

static void on_disconnect(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    struct relay *r = user_data;
    printf("relay: %s %s: %s\n", client == r->in ? "in" : "out",
           data->error == MQTT_OK ? "disconnected" : "lost its connection",
           mqtt_strerror(data->error));
}

static int setup(mqtt_client *client, struct relay *r, const char *host, int port)
{
    mqtt_client_on(client, MQTT_CONNACK, on_connack, NULL, 0, r);
    mqtt_client_on(client, MQTT_DISCONNECT, on_disconnect, NULL, 0, r);
    mqtt_client_on(client, MQTT_SUBACK, on_suback, NULL, 0, r);
    return mqtt_client_connect_async(client, host, 30, (uint16_t)port);
}

static int min_timeout(int a, int b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return a < b ? a : b;
}

int main(int argc, char **argv)
{
    const char *host1 = argc > 1 ? argv[1] : "localhost";
    int port1 = argc > 2 ? atoi(argv[2]) : 1883;
    const char *host2 = argc > 3 ? argv[3] : "localhost";
    int port2 = argc > 4 ? atoi(argv[4]) : 1883;
    int count = argc > 5 ? atoi(argv[5]) : 10;
    struct relay r;
    struct pollfd fds[2];
    long long deadline, next_tick;
    int sent = 0, expected, rc = 1;

    memset(&r, 0, sizeof r);
    r.in = mqtt_client_new("relay-in", true);
    r.out = mqtt_client_new("relay-out", true);
    if (r.in == NULL || r.out == NULL || count <= 0) {
        fprintf(stderr, "relay: bad arguments\n");
        goto done;
    }
    mqtt_client_on(r.in, MQTT_PUBLISH, relay_message, from_broker_1, 0, &r);
    mqtt_client_on(r.in, MQTT_PUBREL, relay_message, from_broker_1, 0, &r);
    mqtt_client_on(r.out, MQTT_PUBLISH, count_arrival, NULL, 0, &r);
    mqtt_client_on(r.out, MQTT_PUBREL, count_arrival, NULL, 0, &r);
    if (setup(r.in, &r, host1, port1) < 0 || setup(r.out, &r, host2, port2) < 0) {
        fprintf(stderr, "relay: connect_async failed\n");
        goto done;
    }
    printf("relay: %s:%d -> %s:%d, %d messages per QoS\n", host1, port1, host2, port2, count);

    expected = 3 * count;
    deadline = now_ms() + 30000;
    next_tick = now_ms();
    while (now_ms() < deadline && !r.failed) {
        int timeout, a, b;
        long long now = now_ms();

        /* The application's own timer: one message per tick once both
         * clients are subscribed. */
        if (r.subacks == 2 && sent < expected && now >= next_tick) {
            char topic[64], payload[32];
            int qos = sent % 3;
            snprintf(topic, sizeof topic, "relay/in/q%d", qos);
            snprintf(payload, sizeof payload, "m%d", sent);
            if (mqtt_client_publish(r.in, topic, payload, strlen(payload), qos, false) > 0)
                sent++;
            next_tick = now + TICK_MS;
        }
        if (r.arrived[0] + r.arrived[1] + r.arrived[2] >= expected)
            break;

        a = mqtt_client_next_timeout_ms(r.in);
        b = mqtt_client_next_timeout_ms(r.out);
        timeout = min_timeout(min_timeout(a, b), sent < expected ? TICK_MS : 100);
        fds[0].fd = mqtt_client_socket(r.in);
        fds[1].fd = mqtt_client_socket(r.out);
        fds[0].events = fds[1].events = POLLIN;
        fds[0].revents = fds[1].revents = 0;
        if (poll(fds, 2, timeout) < 0)
            break;
        /* One step each: cheap when there is nothing to do. */
        mqtt_client_loop(r.in, 0);
        mqtt_client_loop(r.out, 0);
    }

    printf("relay: sent %d, relayed %d, arrived qos0=%d qos1=%d qos2=%d\n", sent, r.relayed,
           r.arrived[0], r.arrived[1], r.arrived[2]);
    /* QoS 0 may not be lost on loopback either; QoS 1 may be duplicated in
     * theory, but not without a connection loss, which would be reported. */
    if (r.arrived[0] == count && r.arrived[1] == count && r.arrived[2] == count) {
        printf("relay: every message relayed with its QoS\n");
        rc = 0;
    }
done:
    if (r.in != NULL)
        mqtt_client_disconnect(r.in);
    if (r.out != NULL)
        mqtt_client_disconnect(r.out);
    mqtt_client_free(r.in);
    mqtt_client_free(r.out);
    return rc;
}
