/*
 * logging.c - mqtt_client_set_log: the INFO lines of a connect + publish + disconnect,
 * the DEBUG packet lines, level filtering, turning logging off, and silence by default.
 *
 * Usage: test_logging [host] [port] [case]
 */
#include "test_util.h"

#define MAX_LINES 128

struct lines {
    mqtt_client *expected_client;
    int wrong_client;
    int count;
    int levels[MAX_LINES];
    char text[MAX_LINES][200];
};

static void on_log(mqtt_client *client, int level, const char *message, void *user_data)
{
    struct lines *lines = (struct lines *)user_data;

    pthread_mutex_lock(&t_lock);
    if (client != lines->expected_client)
        lines->wrong_client++;
    if (lines->count < MAX_LINES) {
        lines->levels[lines->count] = level;
        snprintf(lines->text[lines->count], sizeof lines->text[0], "%s", message);
    }
    lines->count++;
    t_signal_locked();
    pthread_mutex_unlock(&t_lock);
}

/* Index of the first line starting with `prefix` at `level` (0: any level), or -1. */
static int find_line(struct lines *lines, int level, const char *prefix)
{
    int i, found = -1;

    pthread_mutex_lock(&t_lock);
    for (i = 0; i < lines->count && i < MAX_LINES; i++) {
        if ((level == 0 || lines->levels[i] == level) &&
            strncmp(lines->text[i], prefix, strlen(prefix)) == 0) {
            found = i;
            break;
        }
    }
    pthread_mutex_unlock(&t_lock);
    return found;
}

static int max_level(struct lines *lines)
{
    int i, max = 0;

    pthread_mutex_lock(&t_lock);
    for (i = 0; i < lines->count && i < MAX_LINES; i++)
        if (lines->levels[i] > max)
            max = lines->levels[i];
    pthread_mutex_unlock(&t_lock);
    return max;
}

static void dump(struct lines *lines)
{
    int i;

    pthread_mutex_lock(&t_lock);
    for (i = 0; i < lines->count && i < MAX_LINES; i++)
        fprintf(stderr, "    log %d: %s\n", lines->levels[i], lines->text[i]);
    pthread_mutex_unlock(&t_lock);
}

static int n_puback, n_disconnect;

static void on_puback(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)data;
    (void)user_data;
    t_bump(&n_puback);
}

static void on_disconnect(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)data;
    (void)user_data;
    t_bump(&n_disconnect);
}

/* connect, subscribe, publish QoS 1 (wait for PUBACK), disconnect (wait for DISCONNECT),
 * with the loop thread; returns the QoS 1 message's mid or a negative error. */
static int session(mqtt_client *client, int *sub_mid)
{
    char topic[128];
    int rc, mid, pubacks = t_get(&n_puback), disconnects = t_get(&n_disconnect);

    t_topic(topic, sizeof topic, "log");
    mqtt_client_on(client, MQTT_PUBACK, on_puback, NULL, 0, NULL);
    mqtt_client_on(client, MQTT_SUBACK, t_on_suback, NULL, 0, NULL);
    mqtt_client_on(client, MQTT_DISCONNECT, on_disconnect, NULL, 0, NULL);
    if ((rc = mqtt_client_loop_start(client, NULL, NULL)) != MQTT_OK)
        return rc;
    if ((rc = t_connect(client)) != MQTT_OK)
        return rc;
    if ((rc = t_subscribe_wait(client, topic, 1)) < 0)
        return rc;
    *sub_mid = rc;
    mid = mqtt_client_publish(client, topic, "hello", 5, 1, false);
    if (mid < 0)
        return mid;
    if (!t_wait(&n_puback, pubacks + 1, 5000))
        return MQTT_ERR_TIMEOUT;
    if ((rc = mqtt_client_disconnect(client)) != MQTT_OK)
        return rc;
    if (!t_wait(&n_disconnect, disconnects + 1, 5000))
        return MQTT_ERR_TIMEOUT;
    if ((rc = mqtt_client_loop_stop(client)) != MQTT_OK)
        return rc;
    return mid;
}

static void info_lines(void)
{
    static struct lines lines;
    mqtt_client *client = t_client("log-info", true);
    char expected[64];
    int mid, sub_mid, connecting, connected, disconnected;

    CHECK(client != NULL);
    lines.expected_client = client;
    CHECK_RC(mqtt_client_set_log(client, on_log, MQTT_LOG_INFO, &lines), MQTT_OK);
    CHECK_OK(mid, session(client, &sub_mid));
    snprintf(expected, sizeof expected, "connecting to %s:%u", t_host, (unsigned)t_port);
    connecting = find_line(&lines, MQTT_LOG_INFO, expected);
    connected = find_line(&lines, MQTT_LOG_INFO, "connected (session present: false)");
    disconnected = find_line(&lines, MQTT_LOG_INFO, "disconnected");
    if (connecting < 0 || connected < 0 || disconnected < 0)
        dump(&lines);
    CHECK(connecting >= 0);
    CHECK(connected > connecting);
    CHECK(disconnected > connected);
    /* nothing below INFO, nothing at WARN/ERROR in a clean session */
    CHECK_EQ(max_level(&lines), MQTT_LOG_INFO);
    CHECK_EQ(find_line(&lines, MQTT_LOG_WARN, ""), -1);
    CHECK_EQ(find_line(&lines, MQTT_LOG_ERROR, ""), -1);
    CHECK_EQ(lines.count, 3);
    CHECK_EQ(lines.wrong_client, 0);
done:
    mqtt_client_free(client);
}

static void debug_lines(void)
{
    static struct lines lines;
    mqtt_client *client = t_client("log-debug", true);
    char expected[64];
    int mid, sub_mid;

    CHECK(client != NULL);
    lines.expected_client = client;
    CHECK_RC(mqtt_client_set_log(client, on_log, MQTT_LOG_DEBUG, &lines), MQTT_OK);
    CHECK_OK(mid, session(client, &sub_mid));
    CHECK(find_line(&lines, MQTT_LOG_DEBUG, "sent CONNECT") >= 0);
    CHECK(find_line(&lines, MQTT_LOG_DEBUG, "received CONNACK") >= 0);
    snprintf(expected, sizeof expected, "sent SUBSCRIBE (mid %d)", sub_mid);
    CHECK(find_line(&lines, MQTT_LOG_DEBUG, expected) >= 0);
    snprintf(expected, sizeof expected, "received SUBACK (mid %d", sub_mid);
    CHECK(find_line(&lines, MQTT_LOG_DEBUG, expected) >= 0);
    snprintf(expected, sizeof expected, "sent PUBLISH (mid %d, qos 1", mid);
    CHECK(find_line(&lines, MQTT_LOG_DEBUG, expected) >= 0);
    snprintf(expected, sizeof expected, "received PUBACK (mid %d)", mid);
    CHECK(find_line(&lines, MQTT_LOG_DEBUG, expected) >= 0);
    /* our own message comes back through the subscription */
    CHECK(find_line(&lines, MQTT_LOG_DEBUG, "received PUBLISH (mid ") >= 0);
    CHECK(find_line(&lines, MQTT_LOG_DEBUG, "sent DISCONNECT") >= 0);
    CHECK(find_line(&lines, MQTT_LOG_INFO, "connected (session present: false)") >= 0);
    CHECK_EQ(lines.wrong_client, 0);
done:
    if (t_case_failed)
        dump(&lines);
    mqtt_client_free(client);
}

/* WARN gets the failed attempt, ERROR filters it out; the INFO "connecting" line is
 * filtered at both. Port 1 on the loopback refuses connections. */
static void level_filtering(void)
{
    static struct lines warn, error;
    mqtt_client *a = t_client("log-warn", true);
    mqtt_client *b = t_client("log-error", true);

    CHECK(a != NULL && b != NULL);
    warn.expected_client = a;
    error.expected_client = b;
    CHECK_RC(mqtt_client_set_log(a, on_log, MQTT_LOG_WARN, &warn), MQTT_OK);
    CHECK_RC(mqtt_client_set_log(b, on_log, MQTT_LOG_ERROR, &error), MQTT_OK);
    CHECK(mqtt_client_connect(a, "127.0.0.1", 30, 1) < 0);
    CHECK(mqtt_client_connect(b, "127.0.0.1", 30, 1) < 0);
    CHECK(find_line(&warn, MQTT_LOG_WARN, "connection attempt failed: ") >= 0);
    CHECK_EQ(find_line(&warn, MQTT_LOG_INFO, ""), -1);
    CHECK_EQ(max_level(&warn), MQTT_LOG_WARN);
    CHECK_EQ(error.count, 0);
done:
    if (t_case_failed) {
        dump(&warn);
        dump(&error);
    }
    mqtt_client_free(a);
    mqtt_client_free(b);
}

/* Silent by default; level 0 and a NULL callback turn logging off. */
static void off(void)
{
    static struct lines lines;
    mqtt_client *client = t_client("log-off", true);
    int mid, sub_mid;

    CHECK(client != NULL);
    lines.expected_client = client;
    /* argument checks change nothing */
    CHECK_RC(mqtt_client_set_log(NULL, on_log, MQTT_LOG_INFO, &lines),
             MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_log(client, on_log, 5, &lines), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_log(client, on_log, -1, &lines), MQTT_ERR_INVALID_ARGUMENT);
    /* by default: nothing (the callback was never installed) */
    CHECK_OK(mid, session(client, &sub_mid));
    CHECK_EQ(lines.count, 0);
    /* level 0 */
    CHECK_RC(mqtt_client_set_log(client, on_log, 0, &lines), MQTT_OK);
    CHECK_OK(mid, session(client, &sub_mid));
    CHECK_EQ(lines.count, 0);
    /* on, then off again with NULL */
    CHECK_RC(mqtt_client_set_log(client, on_log, MQTT_LOG_DEBUG, &lines), MQTT_OK);
    CHECK_RC(mqtt_client_set_log(client, NULL, MQTT_LOG_DEBUG, NULL), MQTT_OK);
    CHECK_OK(mid, session(client, &sub_mid));
    CHECK_EQ(lines.count, 0);
done:
    if (t_case_failed)
        dump(&lines);
    mqtt_client_free(client);
}

int main(int argc, char **argv)
{
    const char *only = t_init(argc, argv);

    RUN(info_lines);
    RUN(debug_lines);
    RUN(level_filtering);
    RUN(off);
    return t_finish("logging");
}
