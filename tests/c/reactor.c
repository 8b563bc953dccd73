/*
 * reactor.c - many clients on one mqtt_reactor: added before and after they
 * connect, driven by the reactor's thread or by the caller's poll() loop,
 * freed from another thread and from their own callback, and the reactor
 * freed with clients still attached (no callback after, no leak).
 *
 * usage: reactor host port [case]
 */
#include "test_util.h"

#include <dirent.h>
#include <poll.h>

#define N 5

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

static int connacks;
static int disconnects;
static int received[N];
static int misdelivered;

static void on_connack(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)data;
    (void)user_data;
    t_bump(&connacks);
}

static void on_disconnect(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)data;
    (void)user_data;
    t_bump(&disconnects);
}

/* user_data: the client's index; the payload must name it. */
static void on_message(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    int index = (int)(intptr_t)user_data;
    char expected[16];

    (void)client;
    snprintf(expected, sizeof expected, "%d", index);
    if (data->message->payload_len != strlen(expected) ||
        memcmp(data->message->payload, expected, strlen(expected)) != 0)
        t_bump(&misdelivered);
    t_bump(&received[index]);
}

/* The same, then the client frees itself from inside its own callback. */
static void on_message_then_free(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    on_message(client, data, user_data);
    mqtt_client_free(client);
}

static void reset(void)
{
    pthread_mutex_lock(&t_lock);
    connacks = disconnects = misdelivered = 0;
    memset(received, 0, sizeof received);
    pthread_mutex_unlock(&t_lock);
}

static void topic_of(char *buf, size_t size, int index)
{
    char suffix[16];
    snprintf(suffix, sizeof suffix, "%d", index);
    t_topic(buf, size, suffix);
}

static mqtt_client *fleet_client(void)
{
    mqtt_client *c = t_client("fleet", true);
    if (c == NULL)
        return NULL;
    mqtt_client_on(c, MQTT_CONNACK, on_connack, NULL, 0, NULL);
    mqtt_client_on(c, MQTT_DISCONNECT, on_disconnect, NULL, 0, NULL);
    mqtt_client_on(c, MQTT_SUBACK, t_on_suback, NULL, 0, NULL);
    return c;
}

/* Publish `index` to client `index`'s topic from `from`. */
static int send_to(mqtt_client *from, int index)
{
    char topic[128], payload[16];
    topic_of(topic, sizeof topic, index);
    snprintf(payload, sizeof payload, "%d", index);
    return mqtt_client_publish(from, topic, payload, strlen(payload), 1, false);
}

/* The reactor's thread drives every client; the per-client loop calls are
 * refused; clients are freed from this thread and from their own callback
 * while it runs; the reactor is freed with three clients attached. */
static void threaded(void)
{
    mqtt_reactor *r = mqtt_reactor_new();
    mqtt_client *c[N] = {NULL};
    char topic[128];
    int i, rc, subacks;

    reset();
    CHECK(r != NULL);
    for (i = 0; i < N; i++) {
        c[i] = fleet_client();
        CHECK(c[i] != NULL);
        CHECK_RC(mqtt_reactor_add(r, c[i], i == 3 ? on_message_then_free : on_message,
                                  (void *)(intptr_t)i),
                 MQTT_OK);
        CHECK_RC(mqtt_client_connect_async(c[i], t_host, 30, t_port), MQTT_OK);
    }
    CHECK_RC(mqtt_reactor_add(r, c[0], NULL, NULL), MQTT_ERR_LOOP_RUNNING);
    CHECK_RC(mqtt_reactor_add(NULL, c[0], NULL, NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_reactor_add(r, NULL, NULL, NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_reactor_set_connect_limit(NULL, 8), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_reactor_set_connect_limit(r, 8), MQTT_OK);
    CHECK_RC(mqtt_reactor_start(r), MQTT_OK);
    CHECK_RC(mqtt_reactor_start(r), MQTT_ERR_LOOP_RUNNING);
    CHECK_RC(mqtt_reactor_run(r, 0), MQTT_ERR_LOOP_RUNNING);
    CHECK_RC(mqtt_reactor_next_timeout_ms(r), MQTT_ERR_LOOP_RUNNING);
    CHECK_RC(mqtt_client_loop_start(c[0], NULL, NULL), MQTT_ERR_LOOP_RUNNING);
    CHECK_RC(mqtt_client_loop(c[0], 0), MQTT_ERR_LOOP_RUNNING);
    CHECK_RC(mqtt_client_loop_stop(c[0]), MQTT_ERR_LOOP_RUNNING);
    CHECK_EQ(mqtt_client_socket(c[0]), mqtt_reactor_socket(r));
    CHECK(t_wait(&connacks, N, 10000));

    subacks = t_get(&t_subacks);
    for (i = 0; i < N; i++) {
        mqtt_subscription sub;
        topic_of(topic, sizeof topic, i);
        sub.topic = topic;
        sub.qos = 1;
        CHECK_OK(rc, mqtt_client_subscribe(c[i], &sub, 1));
    }
    CHECK(t_wait(&t_subacks, subacks + N, 10000));
    for (i = 0; i < N; i++)
        CHECK_OK(rc, send_to(c[0], i));
    for (i = 0; i < N; i++)
        CHECK(t_wait(&received[i], 1, 10000));
    /* Client 3 freed itself from its callback; client 4 is freed from here. */
    mqtt_client_free(c[4]);
    c[4] = NULL;
    c[3] = NULL;
    /* Neither hears any more: a message to 3, then one to 2, which arrives
     * after it (one publisher, one broker). */
    CHECK_OK(rc, send_to(c[0], 3));
    CHECK_OK(rc, send_to(c[0], 4));
    CHECK_OK(rc, send_to(c[0], 2));
    CHECK(t_wait(&received[2], 2, 10000));
    CHECK_EQ(t_get(&received[3]), 1);
    CHECK_EQ(t_get(&received[4]), 1);
    CHECK_EQ(t_get(&misdelivered), 0);
    CHECK_EQ(t_get(&disconnects), 0);

    /* Freed with 0, 1 and 2 attached: no DISCONNECT callback, and they are
     * disconnected but still valid. */
    mqtt_reactor_free(r);
    r = NULL;
    CHECK_EQ(t_get(&disconnects), 0);
    for (i = 0; i < 3; i++)
        CHECK(!mqtt_client_is_connected(c[i]));
    /* Detached: one connects again on its own. */
    CHECK_RC(mqtt_client_connect(c[1], t_host, 30, t_port), MQTT_OK);
    CHECK(mqtt_client_is_connected(c[1]));
done:
    mqtt_reactor_free(r);
    for (i = 0; i < N; i++)
        mqtt_client_free(c[i]);
}

/* One poll() round over the reactor's descriptor, then one turn. */
static int pump(mqtt_reactor *r)
{
    struct pollfd pfd;
    int timeout = mqtt_reactor_next_timeout_ms(r);

    pfd.fd = mqtt_reactor_socket(r);
    pfd.events = POLLIN;
    pfd.revents = 0;
    if (timeout < 0 || timeout > 100)
        timeout = 100;
    poll(&pfd, 1, timeout);
    return mqtt_reactor_run(r, 0);
}

static int pump_until(mqtt_reactor *r, const int *counter, int target)
{
    double start = t_now();
    while (t_get(counter) < target) {
        if (t_now() - start > 10)
            return 0;
        if (pump(r) != MQTT_OK)
            return 0;
    }
    return 1;
}

/* The caller's own loop drives the reactor: no thread at all. One client is
 * added after it connected on its own. */
static void external(void)
{
    mqtt_reactor *r = mqtt_reactor_new();
    mqtt_client *c[3] = {NULL};
    char topic[128];
    int i, rc, subacks, threads = thread_count();

    reset();
    CHECK(r != NULL);
    CHECK_EQ(mqtt_reactor_next_timeout_ms(r), -1);
    for (i = 0; i < 3; i++) {
        c[i] = fleet_client();
        CHECK(c[i] != NULL);
    }
    /* Client 2 connects first (blocking, on its own), then joins. */
    CHECK_RC(mqtt_client_connect(c[2], t_host, 30, t_port), MQTT_OK);
    for (i = 0; i < 3; i++)
        CHECK_RC(mqtt_reactor_add(r, c[i], on_message, (void *)(intptr_t)i), MQTT_OK);
    for (i = 0; i < 2; i++)
        CHECK_RC(mqtt_client_connect_async(c[i], t_host, 30, t_port), MQTT_OK);
    CHECK(pump_until(r, &connacks, 3));
    CHECK(mqtt_client_is_connected(c[2]));
    subacks = t_get(&t_subacks);
    for (i = 0; i < 3; i++) {
        mqtt_subscription sub;
        topic_of(topic, sizeof topic, i);
        sub.topic = topic;
        sub.qos = 1;
        CHECK_OK(rc, mqtt_client_subscribe(c[i], &sub, 1));
    }
    CHECK(pump_until(r, &t_subacks, subacks + 3));
    for (i = 0; i < 3; i++)
        CHECK_OK(rc, send_to(c[2], i));
    for (i = 0; i < 3; i++)
        CHECK(pump_until(r, &received[i], 1));
    CHECK_EQ(t_get(&misdelivered), 0);
    /* keepalive 30 s: the next deadline is a ping, well ahead */
    rc = mqtt_reactor_next_timeout_ms(r);
    CHECK(rc > 0 && rc <= 30000);
    CHECK_EQ(thread_count(), threads);
    mqtt_client_free(c[0]);
    c[0] = NULL;
    CHECK_RC(mqtt_reactor_run(r, 0), MQTT_OK);
done:
    mqtt_reactor_free(r);
    for (i = 0; i < 3; i++)
        mqtt_client_free(c[i]);
}

int main(int argc, char **argv)
{
    const char *only = t_init(argc, argv);

    RUN(threaded);
    RUN(external);
    return t_finish("reactor");
}
