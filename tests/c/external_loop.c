/*
 * external_loop.c - the client driven by the caller's own poll() loop, with no
 * thread of the library's: mqtt_client_socket, mqtt_client_next_timeout_ms,
 * mqtt_client_loop(client, 0) and mqtt_client_connect_async.
 *
 * usage: external_loop host port [case]
 */
#include "test_util.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

/* Threads of this process, from /proc/self/task. */
static int thread_count(void)
{
    DIR *dir = opendir("/proc/self/task");
    struct dirent *entry;
    int n = 0;

    if (dir == NULL)
        return -1;
    while ((entry = readdir(dir)) != NULL)
        if (entry->d_name[0] != '.')
            n++;
    closedir(dir);
    return n;
}

struct events {
    int connacks;
    int disconnects;
    int last_error;
    int pingresps;
    int messages;
};

static void on_event(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    struct events *ev = user_data;
    (void)client;
    switch (data->command) {
    case MQTT_CONNACK:
        ev->connacks++;
        break;
    case MQTT_DISCONNECT:
        ev->disconnects++;
        ev->last_error = data->error;
        break;
    case MQTT_PINGRESP:
        ev->pingresps++;
        break;
    default:
        break;
    }
}

static void on_message(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    struct events *ev = user_data;
    (void)client;
    (void)data;
    ev->messages++;
}

static void watch(mqtt_client *client, struct events *ev)
{
    mqtt_client_on(client, MQTT_CONNACK, on_event, NULL, 0, ev);
    mqtt_client_on(client, MQTT_DISCONNECT, on_event, NULL, 0, ev);
    mqtt_client_on(client, MQTT_PINGRESP, on_event, NULL, 0, ev);
}

/*
 * One iteration of an application's main loop: sleep in poll() on the client's
 * descriptor for no longer than the client asks, then let it work. The
 * application's own timer (`app_timer_ms`) bounds the wait too.
 */
static int pump(mqtt_client *client, int app_timer_ms)
{
    struct pollfd pfd;
    int timeout = mqtt_client_next_timeout_ms(client);

    if (timeout < 0 || (app_timer_ms >= 0 && app_timer_ms < timeout))
        timeout = app_timer_ms;
    pfd.fd = mqtt_client_socket(client);
    pfd.events = POLLIN;
    pfd.revents = 0;
    if (poll(&pfd, 1, timeout) < 0)
        return -1;
    return mqtt_client_loop(client, 0);
}

/* Connect, exchange QoS 0/1/2 with itself, stay up through keepalive, all in
 * one thread. */
static void no_thread_in_external_loop_mode(void)
{
    struct events ev = {0};
    mqtt_client *client = t_client("ext", true);
    mqtt_subscription sub;
    char topic[128];
    double start, idle_until;
    int rc, q, threads_before = thread_count();

    CHECK(client != NULL);
    watch(client, &ev);
    mqtt_client_on(client, MQTT_PUBREL, on_message, NULL, 0, &ev);
    mqtt_client_on(client, MQTT_PUBLISH, on_message, NULL, 0, &ev);
    /* A 1 s keepalive: the broker would drop us after 1.5 s without pings. */
    start = t_now();
    CHECK_RC(mqtt_client_connect_async(client, "127.0.0.1", 1, t_port), MQTT_OK);
    /* Returned at once: nothing ran the connection yet (no thread does here). */
    CHECK_EQ(ev.connacks, 0);
    CHECK(!mqtt_client_is_connected(client));
    while (ev.connacks == 0 && ev.disconnects == 0 && t_now() - start < 5)
        pump(client, 100);
    CHECK_EQ(ev.connacks, 1);
    CHECK(mqtt_client_is_connected(client));

    t_topic(topic, sizeof topic, "echo");
    sub.topic = topic;
    sub.qos = 2;
    CHECK(mqtt_client_subscribe(client, &sub, 1) > 0);
    for (q = 0; q <= 2; q++) {
        CHECK(mqtt_client_publish(client, topic, "x", 1, q, false) > 0);
    }
    start = t_now();
    while (ev.messages < 3 && t_now() - start < 5)
        pump(client, 100);
    /* QoS 2 is counted once on PUBREL; its PUBLISH comes without message. */
    CHECK(ev.messages >= 3);

    /* Idle 3.5 s with no timer of our own: only next_timeout_ms wakes us. */
    idle_until = t_now() + 3.5;
    while (t_now() < idle_until) {
        rc = pump(client, -1);
        CHECK(rc == MQTT_OK);
    }
    CHECK(ev.pingresps >= 2);
    CHECK_EQ(ev.disconnects, 0);
    CHECK(mqtt_client_is_connected(client));
    CHECK_EQ(thread_count(), threads_before);
    CHECK_EQ(threads_before, 1);

    CHECK_RC(mqtt_client_disconnect(client), MQTT_OK);
    while (ev.disconnects == 0 && t_now() - idle_until < 5)
        pump(client, 100);
    CHECK_EQ(ev.last_error, MQTT_OK);
done:
    mqtt_client_free(client);
}

/* A listener that completes TCP handshakes (kernel backlog) but never answers. */
static int blackhole_listener(uint16_t *port)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 8) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(addr.sin_port);
    return fd;
}

static void connect_async_to_a_blackhole_reports_the_timeout(void)
{
    struct events ev = {0};
    mqtt_client *client = t_client("hole", true);
    uint16_t port = 0;
    int listener = blackhole_listener(&port);
    double start, took;

    CHECK(client != NULL);
    CHECK(listener >= 0);
    watch(client, &ev);
    CHECK_RC(mqtt_client_set_connect_timeout(client, 400), MQTT_OK);
    CHECK_RC(mqtt_client_set_reconnect(client, 0, 0), MQTT_OK);
    start = t_now();
    CHECK_RC(mqtt_client_connect_async(client, "127.0.0.1", 30, port), MQTT_OK);
    CHECK(t_now() - start < 0.05);
    while (ev.disconnects == 0 && t_now() - start < 5)
        pump(client, -1);
    took = t_now() - start;
    CHECK_EQ(ev.disconnects, 1);
    CHECK_EQ(ev.last_error, MQTT_ERR_TIMEOUT);
    CHECK_EQ(ev.connacks, 0);
    CHECK(took >= 0.39 && took < 1.0);
    CHECK_EQ(mqtt_client_next_timeout_ms(client), -1); /* reconnection is off */
done:
    if (listener >= 0)
        close(listener);
    mqtt_client_free(client);
}

static void reconnect_backoff_is_driven_by_next_timeout_alone(void)
{
    struct events ev = {0};
    mqtt_client *client = t_client("backoff", true);
    uint16_t port = 0;
    int listener = blackhole_listener(&port);
    double start;
    int timeout;

    CHECK(client != NULL);
    CHECK(listener >= 0);
    close(listener); /* nothing listens there now: connections are refused */
    listener = -1;
    watch(client, &ev);
    CHECK_RC(mqtt_client_set_reconnect(client, 200, 800), MQTT_OK);
    CHECK_RC(mqtt_client_connect_async(client, "127.0.0.1", 30, port), MQTT_OK);
    start = t_now();
    while (ev.disconnects == 0 && t_now() - start < 5)
        pump(client, -1);
    CHECK_EQ(ev.last_error, MQTT_ERR_CONNECT_FAILED);
    /* The first retry is due within [min, 2 x min] of the failure; some of it
     * may have passed already (valgrind on a busy machine), none of it may be
     * skipped: a retry is scheduled, not immediate, and not beyond 2 x min. */
    timeout = mqtt_client_next_timeout_ms(client);
    CHECK(timeout > 0 && timeout <= 400);
    start = t_now();
    while (ev.disconnects < 4 && t_now() - start < 5)
        pump(client, -1);
    CHECK_EQ(ev.disconnects, 4);
    /* Three more delays of at least 200, 400 and 400 ms (max 800 caps the third). */
    CHECK(t_now() - start >= 1.0 - 0.1);
    CHECK_EQ(thread_count(), 1);
done:
    mqtt_client_free(client);
}

int main(int argc, char **argv)
{
    const char *only = t_init(argc, argv);

    RUN(no_thread_in_external_loop_mode);
    RUN(connect_async_to_a_blackhole_reports_the_timeout);
    RUN(reconnect_backoff_is_driven_by_next_timeout_alone);
    return t_finish("external_loop");
}
