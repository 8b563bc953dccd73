/*
 * own_loop.c - no loop thread: the program drives the client from its own main loop.
 *
 * mqtt_client_loop(client, timeout_ms) runs one turn of the client's reactor in the
 * caller's thread: it waits up to timeout_ms for the socket or a timer, handles what
 * arrived and runs the callbacks, in this thread. Between turns the program does its own
 * work (here: counting turns). The client subscribes to a topic, publishes a message to
 * it and exits when the message came back.
 *
 * Usage: own_loop [host] [port]      (defaults: localhost 1883)
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mqtt.h>

/* No thread: the callbacks run inside mqtt_client_loop(), plain variables suffice. */
static int subscribed, received, disconnected;

static void on_suback(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)user_data;
    printf("SUBACK mid %u\n", (unsigned)data->mid);
    subscribed = 1;
}

static void on_message(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    const char *expected = (const char *)user_data;
    (void)client;
    if (data->message == NULL)
        return;
    printf("received \"%.*s\" on %s (qos %d)\n", (int)data->message->payload_len,
           (const char *)data->message->payload, data->message->topic, data->message->qos);
    if (data->message->payload_len == strlen(expected) &&
        memcmp(data->message->payload, expected, data->message->payload_len) == 0)
        received++;
}

static void on_disconnect(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)user_data;
    printf("disconnected: %s\n", mqtt_strerror(data->error));
    disconnected = 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Run reactor turns until *flag is set or the deadline passes; returns *flag. */
static int loop_until(mqtt_client *client, const int *flag, double seconds, long *turns)
{
    double deadline = now_s() + seconds;
    int rc;

    while (!*flag && now_s() < deadline) {
        rc = mqtt_client_loop(client, 100);
        if (rc < 0) {
            if (rc != MQTT_ERR_NOT_CONNECTED)
                fprintf(stderr, "mqtt_client_loop: %s\n", mqtt_strerror(rc));
            break;
        }
        ++*turns; /* ... the application's own work goes here ... */
    }
    return *flag;
}

int main(int argc, char **argv)
{
    const char *host = argc > 1 ? argv[1] : "localhost";
    long port = argc > 2 ? strtol(argv[2], NULL, 10) : 1883;
    static const char payload[] = "hello from my own loop";
    char client_id[64], topic[64];
    mqtt_subscription sub;
    mqtt_client *client;
    int rc, status = 1;
    long turns = 0;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "usage: %s [host] [port]\n", argv[0]);
        return 2;
    }
    snprintf(client_id, sizeof client_id, "own-loop-%ld", (long)getpid());
    snprintf(topic, sizeof topic, "example/own_loop/%ld", (long)getpid());

    client = mqtt_client_new(client_id, true);
    if (client == NULL) {
        fprintf(stderr, "mqtt_client_new failed\n");
        return 1;
    }
    mqtt_client_set_connect_timeout(client, 5000);
    mqtt_client_on(client, MQTT_SUBACK, on_suback, NULL, 0, NULL);
    mqtt_client_on(client, MQTT_PUBLISH, on_message, NULL, 0, (void *)payload);
    mqtt_client_on(client, MQTT_DISCONNECT, on_disconnect, NULL, 0, NULL);

    rc = mqtt_client_connect(client, host, 30, (uint16_t)port);
    if (rc != MQTT_OK) {
        fprintf(stderr, "connect to %s:%ld: %s\n", host, port, mqtt_strerror(rc));
        goto out;
    }
    printf("connected to %s:%ld\n", host, port);

    sub.topic = topic;
    sub.qos = 1;
    rc = mqtt_client_subscribe(client, &sub, 1);
    if (rc < 0) {
        fprintf(stderr, "subscribe: %s\n", mqtt_strerror(rc));
        goto out;
    }
    printf("subscribing to %s (mid %d)\n", topic, rc);
    if (!loop_until(client, &subscribed, 10.0, &turns)) {
        fprintf(stderr, "no SUBACK\n");
        goto out;
    }

    rc = mqtt_client_publish(client, topic, payload, strlen(payload), 1, false);
    if (rc < 0) {
        fprintf(stderr, "publish: %s\n", mqtt_strerror(rc));
        goto out;
    }
    printf("published to %s (mid %d)\n", topic, rc);
    if (!loop_until(client, &received, 10.0, &turns)) {
        fprintf(stderr, "the message did not come back\n");
        goto out;
    }
    printf("OK after %ld loop turns\n", turns);
    status = 0;

    if (mqtt_client_disconnect(client) == MQTT_OK)
        loop_until(client, &disconnected, 5.0, &turns);
out:
    mqtt_client_free(client);
    return status;
}
