/*
 * net_paths.c - mqtt_client_set_proxy and mqtt_client_connect_uri(_async) from C,
 * against a real broker and a real HTTP proxy (tinyproxy with Basic credentials):
 * malformed URIs rejected with nothing changed, a refusing proxy is MQTT_ERR_PROXY
 * (returned, and in the DISCONNECT callback's data), a QoS 1 round trip through the
 * proxy, then the proxy removed and the broker reached directly.
 *
 * usage: net_paths host port [case]
 * environment: MQTT_TEST_PROXY (the proxy's URI with the right credentials),
 *              MQTT_TEST_PROXY_BAD (the same proxy with a wrong password).
 */
#include "test_util.h"

static const char *proxy_uri(const char *name)
{
    const char *uri = getenv(name);
    if (uri == NULL || uri[0] == '\0') {
        fprintf(stderr, "%s is not set\n", name);
        exit(2);
    }
    return uri;
}

static void broker_uri(char *buf, size_t size)
{
    snprintf(buf, size, "mqtt://%s:%u", t_host, (unsigned)t_port);
}

/* ---- cases ------------------------------------------------------------------------- */

static void malformed_uris_change_nothing(void)
{
    static const char *const bad_brokers[] = {
        "", "tcp://h:1883", "mqtt://", "mqtt://h:65536", "ws://[::1", "mqtt://h/path",
    };
    static const char *const bad_proxies[] = {
        "", "ftp://h:21", "http://h", "socks5://h:70000", "http://[::1:8080",
    };
    mqtt_client *c = t_client("malformed", true);
    size_t i;

    CHECK(c != NULL);
    CHECK_RC(mqtt_client_connect_uri(NULL, "mqtt://h", 30), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_connect_uri(c, NULL, 30), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_connect_uri_async(c, NULL, 30), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_proxy(NULL, NULL), MQTT_ERR_INVALID_ARGUMENT);
    for (i = 0; i < sizeof bad_brokers / sizeof bad_brokers[0]; i++) {
        CHECK_RC(mqtt_client_connect_uri(c, bad_brokers[i], 30), MQTT_ERR_INVALID_ARGUMENT);
        CHECK_RC(mqtt_client_connect_uri_async(c, bad_brokers[i], 30),
                 MQTT_ERR_INVALID_ARGUMENT);
    }
    for (i = 0; i < sizeof bad_proxies / sizeof bad_proxies[0]; i++)
        CHECK_RC(mqtt_client_set_proxy(c, bad_proxies[i]), MQTT_ERR_INVALID_ARGUMENT);
    /* nothing was set: no target to reconnect to, and no proxy in the way */
    CHECK_RC(mqtt_client_reconnect(c), MQTT_ERR_NOT_CONNECTED);
    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK_RC(mqtt_client_disconnect(c), MQTT_OK);
done:
    mqtt_client_free(c);
}

struct outcome {
    int connacks;
    int disconnects;
    int error;
};

static void on_outcome(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    struct outcome *o = user_data;
    (void)client;
    pthread_mutex_lock(&t_lock);
    if (data->command == MQTT_DISCONNECT) {
        o->error = data->error;
        o->disconnects++;
    } else {
        o->connacks++;
    }
    t_signal_locked();
    pthread_mutex_unlock(&t_lock);
}

static void refusing_proxy_is_mqtt_err_proxy(void)
{
    static struct outcome outcome;
    mqtt_client *c = t_client("refused", true);
    char uri[128];
    int rc;

    memset(&outcome, 0, sizeof outcome);
    broker_uri(uri, sizeof uri);
    CHECK(c != NULL);
    CHECK_RC(mqtt_client_set_reconnect(c, 0, 0), MQTT_OK);
    CHECK_RC(mqtt_client_set_proxy(c, proxy_uri("MQTT_TEST_PROXY_BAD")), MQTT_OK);
    CHECK_RC(mqtt_client_connect_uri(c, uri, 30), MQTT_ERR_PROXY);
    CHECK_RC(t_connect(c), MQTT_ERR_PROXY);
    CHECK(!mqtt_client_is_connected(c));

    CHECK_OK(rc, mqtt_client_on(c, MQTT_DISCONNECT, on_outcome, NULL, 0, &outcome));
    CHECK_OK(rc, mqtt_client_on(c, MQTT_CONNACK, on_outcome, NULL, 0, &outcome));
    CHECK_RC(mqtt_client_loop_start(c, NULL, NULL), MQTT_OK);
    CHECK_RC(mqtt_client_connect_uri_async(c, uri, 30), MQTT_OK);
    CHECK(t_wait(&outcome.disconnects, 1, 5000));
    CHECK_EQ(t_get(&outcome.error), MQTT_ERR_PROXY);
    CHECK_EQ(t_get(&outcome.connacks), 0);
done:
    mqtt_client_free(c);
}

static void round_trip_through_the_proxy_then_direct(void)
{
    static struct t_log log;
    mqtt_client *c = t_client("proxied", true);
    char uri[128], topic[160];
    const char *proxy = proxy_uri("MQTT_TEST_PROXY");
    char *copy = NULL;
    int rc;

    memset(&log, 0, sizeof log);
    broker_uri(uri, sizeof uri);
    t_topic(topic, sizeof topic, "through");
    CHECK(c != NULL);
    /* the URI is copied: a caller's buffer may be reused at once */
    copy = malloc(strlen(proxy) + 1);
    CHECK(copy != NULL);
    strcpy(copy, proxy);
    CHECK_RC(mqtt_client_set_proxy(c, copy), MQTT_OK);
    memset(copy, 'x', strlen(copy));
    free(copy);
    copy = NULL;

    CHECK_OK(rc, mqtt_client_on(c, MQTT_SUBACK, t_on_suback, NULL, 0, NULL));
    CHECK_OK(rc, mqtt_client_on(c, MQTT_PUBLISH, t_record_cb, NULL, 0, &log));
    CHECK_RC(mqtt_client_connect_uri(c, uri, 30), MQTT_OK);
    CHECK(mqtt_client_is_connected(c));
    CHECK_RC(mqtt_client_loop_start(c, NULL, NULL), MQTT_OK);
    CHECK_OK(rc, t_subscribe_wait(c, topic, 1));
    CHECK_OK(rc, mqtt_client_publish(c, topic, "via proxy", 9, 1, false));
    CHECK(t_wait(&log.count, 1, 5000));
    CHECK_EQ(t_log_count_payload(&log, "via proxy"), 1);
    CHECK_RC(mqtt_client_disconnect(c), MQTT_OK);
    CHECK_RC(mqtt_client_loop_stop(c), MQTT_OK);

    /* NULL removes the proxy: the same URI now goes to the broker directly */
    CHECK_RC(mqtt_client_set_proxy(c, NULL), MQTT_OK);
    CHECK_RC(mqtt_client_connect_uri(c, uri, 30), MQTT_OK);
    CHECK(mqtt_client_is_connected(c));
    CHECK_RC(mqtt_client_disconnect(c), MQTT_OK);
done:
    free(copy);
    mqtt_client_free(c);
}

int main(int argc, char **argv)
{
    const char *only = t_init(argc, argv);

    RUN(malformed_uris_change_nothing);
    RUN(refusing_proxy_is_mqtt_err_proxy);
    RUN(round_trip_through_the_proxy_then_direct);
    return t_finish("net_paths");
}
