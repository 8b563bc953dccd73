/*
 * api_errors.c - argument checking and error reporting of the C ABI (API.md
 * "Conventions"): bad arguments return MQTT_ERR_INVALID_ARGUMENT or a more precise code
 * and change nothing; mqtt_strerror covers every code; mqtt_topic_matches; the version.
 *
 * Usage: api_errors host port [case]
 */
#include "test_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static void noop_cb(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)data;
    (void)user_data;
}

static bool noop_cond(const mqtt_data *data, void *user_data)
{
    (void)data;
    (void)user_data;
    return false;
}

static const int all_codes[] = {
    MQTT_OK,
    MQTT_ERR_INVALID_ARGUMENT,
    MQTT_ERR_INVALID_UTF8,
    MQTT_ERR_INVALID_TOPIC,
    MQTT_ERR_INVALID_QOS,
    MQTT_ERR_PAYLOAD_TOO_LARGE,
    MQTT_ERR_NO_MEMORY,
    MQTT_ERR_NOT_CONNECTED,
    MQTT_ERR_ALREADY_CONNECTED,
    MQTT_ERR_QUEUE_FULL,
    MQTT_ERR_DNS,
    MQTT_ERR_CONNECT_FAILED,
    MQTT_ERR_TIMEOUT,
    MQTT_ERR_CONNECTION_LOST,
    MQTT_ERR_IO,
    MQTT_ERR_MALFORMED_PACKET,
    MQTT_ERR_PROTOCOL_VIOLATION,
    MQTT_ERR_PACKET_TOO_LARGE,
    MQTT_ERR_KEEPALIVE_TIMEOUT,
    MQTT_ERR_TOO_MANY_INCOMING,
    MQTT_ERR_REFUSED_PROTOCOL_VERSION,
    MQTT_ERR_REFUSED_IDENTIFIER,
    MQTT_ERR_REFUSED_SERVER_UNAVAILABLE,
    MQTT_ERR_REFUSED_BAD_CREDENTIALS,
    MQTT_ERR_REFUSED_NOT_AUTHORIZED,
    MQTT_ERR_SESSION_LOST,
    MQTT_ERR_LOOP_RUNNING,
    MQTT_ERR_LOOP_NOT_RUNNING,
    MQTT_ERR_IN_CALLBACK,
    MQTT_ERR_INTERNAL,
    MQTT_ERR_TLS_CA,
    MQTT_ERR_TLS_CERT,
    MQTT_ERR_TLS_KEY,
    MQTT_ERR_TLS_NOT_TRUSTED,
    MQTT_ERR_TLS_HOSTNAME,
    MQTT_ERR_TLS_HANDSHAKE,
    MQTT_ERR_INVALID_PROPERTY,
    MQTT_ERR_PROTOCOL_VERSION,
    MQTT_ERR_NOT_FOUND,
    MQTT_ERR_REFUSED_BY_BROKER,
    MQTT_ERR_SERVER_DISCONNECT,
    MQTT_ERR_NOT_SUPPORTED,
    MQTT_ERR_TOPIC_ALIAS_INVALID,
    MQTT_ERR_PROXY,
};

static void strerror_every_code(void)
{
    const size_t n = sizeof all_codes / sizeof all_codes[0];
    const char *msg[sizeof all_codes / sizeof all_codes[0]];
    const char *s;
    size_t i, j;

    /* the values are part of the ABI */
    CHECK_EQ(MQTT_OK, 0);
    CHECK_EQ(MQTT_ERR_INVALID_ARGUMENT, -1);
    CHECK_EQ(MQTT_ERR_TOO_MANY_INCOMING, -19);
    CHECK_EQ(MQTT_ERR_REFUSED_PROTOCOL_VERSION, -21);
    CHECK_EQ(MQTT_ERR_REFUSED_NOT_AUTHORIZED, -25);
    CHECK_EQ(MQTT_ERR_SESSION_LOST, -26);
    CHECK_EQ(MQTT_ERR_LOOP_RUNNING, -30);
    CHECK_EQ(MQTT_ERR_INTERNAL, -33);
    CHECK_EQ(MQTT_ERR_TLS_CA, -40);
    CHECK_EQ(MQTT_ERR_TLS_HANDSHAKE, -45);
    CHECK_EQ(MQTT_ERR_INVALID_PROPERTY, -50);
    CHECK_EQ(MQTT_ERR_TOPIC_ALIAS_INVALID, -56);
    CHECK_EQ(MQTT_ERR_PROXY, -60);

    for (i = 0; i < n; i++) {
        msg[i] = mqtt_strerror(all_codes[i]);
        if (msg[i] == NULL || msg[i][0] == '\0') {
            t_failf(__LINE__, "mqtt_strerror(%d) is NULL or empty", all_codes[i]);
            goto done;
        }
        /* static: the same pointer (or at least the same text) every time */
        CHECK(strcmp(mqtt_strerror(all_codes[i]), msg[i]) == 0);
    }
    for (i = 0; i < n; i++)
        for (j = i + 1; j < n; j++)
            if (strcmp(msg[i], msg[j]) == 0) {
                t_failf(__LINE__, "codes %d and %d share the message \"%s\"", all_codes[i],
                        all_codes[j], msg[i]);
                goto done;
            }
    /* unknown codes still give a string */
    s = mqtt_strerror(-20);
    CHECK(s != NULL && s[0] != '\0');
    s = mqtt_strerror(-12345);
    CHECK(s != NULL && s[0] != '\0');
    s = mqtt_strerror(42);
    CHECK(s != NULL);
    s = mqtt_strerror((int)0x80000000u);
    CHECK(s != NULL);
done:;
}

static void version(void)
{
    const char *v = mqtt_version();
    char expected[32];

    CHECK(v != NULL);
    CHECK(strcmp(v, MQTT_VERSION_STRING) == 0);
    snprintf(expected, sizeof expected, "%d.%d.%d", MQTT_VERSION_MAJOR, MQTT_VERSION_MINOR,
             MQTT_VERSION_PATCH);
    CHECK(strcmp(v, expected) == 0);
done:;
}

struct match_case {
    const char *filter;
    const char *topic;
    bool expected;
};

static void topic_matches(void)
{
    static const struct match_case cases[] = {
        {"a/b", "a/b", true},
        {"a/b", "a/c", false},
        {"a/b", "a/b/c", false},
        {"a/b/c", "a/b", false},
        {"a/b", "a/b/", false},
        {"a/+", "a/b", true},
        {"a/+", "a/b/c", false},
        {"a/+", "a/", true},
        {"a/+/c", "a/b/c", true},
        {"a/+/c", "a//c", true},
        {"a/+/c", "a/b/d", false},
        {"+/+", "/x", true},
        {"/+", "/x", true},
        {"+", "a", true},
        {"+", "a/b", false},
        {"a/#", "a", true}, /* '#' also matches the parent level */
        {"a/#", "a/b", true},
        {"a/#", "a/b/c", true},
        {"a/#", "ab", false},
        {"a/#", "b/a", false},
        {"#", "a", true},
        {"#", "a/b/c", true},
        {"#", "/", true},
        {"+/#", "a/b", true},
        {"home/+", "home/kitchen", true},
        {"home/+", "home/_stop", true},
        {"home/+", "office/kitchen", false},
        /* $-topics are not matched by a leading wildcard */
        {"#", "$SYS/broker/uptime", false},
        {"+/broker/uptime", "$SYS/broker/uptime", false},
        {"$SYS/#", "$SYS/broker/uptime", true},
        {"$SYS/+/uptime", "$SYS/broker/uptime", true},
        /* case sensitive */
        {"A/b", "a/b", false},
        /* UTF-8 */
        {"h\xc3\xa9/+", "h\xc3\xa9/x", true},
    };
    size_t i;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (mqtt_topic_matches(cases[i].filter, cases[i].topic) != cases[i].expected) {
            t_failf(__LINE__, "mqtt_topic_matches(\"%s\", \"%s\") != %s", cases[i].filter,
                    cases[i].topic, cases[i].expected ? "true" : "false");
        }
    CHECK(!t_case_failed);
    CHECK(!mqtt_topic_matches(NULL, "a"));
    CHECK(!mqtt_topic_matches("a", NULL));
    CHECK(!mqtt_topic_matches(NULL, NULL));
done:;
}

/* Inputs that are not a valid filter / topic name match nothing (API.md does not spell
 * this out; kept apart so that a failure here is easy to tell from a matching bug). */
static void topic_matches_invalid_inputs(void)
{
    CHECK(!mqtt_topic_matches("a/#/b", "a/x/b"));
    CHECK(!mqtt_topic_matches("a/b#", "a/b#"));
    CHECK(!mqtt_topic_matches("a+", "a+"));
    CHECK(!mqtt_topic_matches("a/+", "a/+"));
    CHECK(!mqtt_topic_matches("#", "a/#"));
    CHECK(!mqtt_topic_matches("a/\xff", "a/\xff"));
done:;
}

static void client_new_and_free(void)
{
    mqtt_client *c = NULL;

    mqtt_client_free(NULL); /* a no-op */
    c = mqtt_client_new("t-new\xff\xfe", true); /* not UTF-8 */
    CHECK(c == NULL);
    c = mqtt_client_new("t-new-\xc3\xa9", true); /* UTF-8 is fine */
    CHECK(c != NULL);
    mqtt_client_free(c);
    c = mqtt_client_new("t-persistent", false);
    CHECK(c != NULL);
done:
    mqtt_client_free(c);
}

static void bad_arguments_offline(void)
{
    mqtt_client *c = t_client("badargs", true);
    mqtt_subscription sub = {"a/b", 1};
    const char *topics[] = {"a/b"};

    CHECK(c != NULL);

    /* NULL client everywhere */
    CHECK_RC(mqtt_client_on(NULL, MQTT_PUBLISH, noop_cb, NULL, 0, NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_connect(NULL, "localhost", 30, 1883), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_reconnect(NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_subscribe(NULL, &sub, 1), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_unsubscribe(NULL, topics, 1), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_publish(NULL, "a/b", "x", 1, 0, false), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_disconnect(NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_loop_start(NULL, NULL, NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_loop_stop(NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_loop(NULL, 0), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_credentials(NULL, "u", "p"), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_will(NULL, "a/b", "x", 1, 0, false), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_connect_timeout(NULL, 1000), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_reconnect(NULL, 100, 1000), MQTT_ERR_INVALID_ARGUMENT);

    /* on: a function is required, the command must be one of mqtt_command */
    CHECK_RC(mqtt_client_on(c, MQTT_PUBLISH, NULL, NULL, 0, NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_on(c, MQTT_PUBLISH, NULL, noop_cond, 0, NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_on(c, 1, noop_cb, NULL, 0, NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_on(c, 0, noop_cb, NULL, 0, NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_on(c, 99, noop_cb, NULL, 0, NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_on(c, -1, noop_cb, NULL, 0, NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_on(c, MQTT_PUBLISH, noop_cb, noop_cond, 3, NULL), MQTT_OK);
    CHECK_RC(mqtt_client_on(c, MQTT_PINGRESP, noop_cb, NULL, 0, NULL), MQTT_OK);
    CHECK_RC(mqtt_client_on(c, MQTT_DISCONNECT, noop_cb, NULL, 0, NULL), MQTT_OK);

    /* connect: a host is required; it must be UTF-8 */
    CHECK_RC(mqtt_client_connect(c, NULL, 30, t_port), MQTT_ERR_INVALID_ARGUMENT);
    {
        int rc = mqtt_client_connect(c, "local\xffhost", 30, t_port);
        CHECK(rc == MQTT_ERR_INVALID_UTF8 || rc == MQTT_ERR_INVALID_ARGUMENT);
    }

    /* options */
    CHECK_RC(mqtt_client_set_credentials(c, NULL, "p"), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_credentials(c, "user", NULL), MQTT_OK);
    CHECK_RC(mqtt_client_set_credentials(c, "user", "secret"), MQTT_OK);
    CHECK_RC(mqtt_client_set_will(c, "a/+", "x", 1, 0, false), MQTT_ERR_INVALID_TOPIC);
    CHECK_RC(mqtt_client_set_will(c, "a/#", "x", 1, 0, false), MQTT_ERR_INVALID_TOPIC);
    CHECK_RC(mqtt_client_set_will(c, "a/b", "x", 1, 3, false), MQTT_ERR_INVALID_QOS);
    CHECK_RC(mqtt_client_set_will(c, "a/b", NULL, 4, 1, false), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_will(c, "a/b", NULL, 0, 1, false), MQTT_OK);
    CHECK_RC(mqtt_client_set_will(c, "a/b", "bye", 3, 1, true), MQTT_OK);
    CHECK_RC(mqtt_client_set_will(c, NULL, NULL, 0, 0, false), MQTT_OK); /* clears it */
    CHECK_RC(mqtt_client_set_credentials(c, NULL, NULL), MQTT_OK);         /* clears them */
    CHECK_RC(mqtt_client_set_connect_timeout(c, 0), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_connect_timeout(c, 2000), MQTT_OK);
    CHECK_RC(mqtt_client_set_reconnect(c, 1000, 10), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_reconnect(c, 0, 0), MQTT_OK);
    CHECK_RC(mqtt_client_set_reconnect(c, 100, 5000), MQTT_OK);

    /* never connected */
    CHECK_RC(mqtt_client_loop_stop(c), MQTT_ERR_LOOP_NOT_RUNNING);
    CHECK_RC(mqtt_client_reconnect(c), MQTT_ERR_NOT_CONNECTED);
    CHECK_RC(mqtt_client_disconnect(c), MQTT_ERR_NOT_CONNECTED);
    CHECK(!mqtt_client_is_connected(c));
    CHECK(!mqtt_client_is_connected(NULL));
done:
    mqtt_client_free(c);
}

static void bad_arguments_connected(void)
{
    mqtt_client *c = t_client("badargs-conn", true);
    mqtt_subscription sub = {"a/b", 1};
    mqtt_subscription subs[2];
    const char *topics[2];
    char ok_topic[128];
    int rc;

    t_topic(ok_topic, sizeof ok_topic, "ok");
    CHECK(c != NULL);
    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK(mqtt_client_is_connected(c));
    CHECK_RC(t_connect(c), MQTT_ERR_ALREADY_CONNECTED);

    /* publish */
    CHECK_RC(mqtt_client_publish(c, NULL, "x", 1, 0, false), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_publish(c, "a/+/b", "x", 1, 0, false), MQTT_ERR_INVALID_TOPIC);
    CHECK_RC(mqtt_client_publish(c, "a/#", "x", 1, 1, false), MQTT_ERR_INVALID_TOPIC);
    CHECK_RC(mqtt_client_publish(c, "+", "x", 1, 2, false), MQTT_ERR_INVALID_TOPIC);
    CHECK_RC(mqtt_client_publish(c, "", "x", 1, 0, false), MQTT_ERR_INVALID_TOPIC);
    CHECK_RC(mqtt_client_publish(c, "a/\xff", "x", 1, 0, false), MQTT_ERR_INVALID_UTF8);
    CHECK_RC(mqtt_client_publish(c, ok_topic, "x", 1, 3, false), MQTT_ERR_INVALID_QOS);
    CHECK_RC(mqtt_client_publish(c, ok_topic, "x", 1, -1, false), MQTT_ERR_INVALID_QOS);
    CHECK_RC(mqtt_client_publish(c, ok_topic, NULL, 5, 0, false), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_OK(rc, mqtt_client_publish(c, ok_topic, NULL, 0, 0, false)); /* empty payload */
    CHECK(rc > 0 && rc <= 65535); /* QoS 0 gets a mid too */
    CHECK_OK(rc, mqtt_client_publish(c, ok_topic, "x", 1, 1, false));
    CHECK(rc > 0 && rc <= 65535);

    /* subscribe */
    CHECK_RC(mqtt_client_subscribe(c, NULL, 1), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_subscribe(c, &sub, 0), MQTT_ERR_INVALID_ARGUMENT);
    sub.topic = NULL;
    CHECK_RC(mqtt_client_subscribe(c, &sub, 1), MQTT_ERR_INVALID_ARGUMENT);
    sub.topic = "a/#/b";
    CHECK_RC(mqtt_client_subscribe(c, &sub, 1), MQTT_ERR_INVALID_TOPIC);
    sub.topic = "a+/b";
    CHECK_RC(mqtt_client_subscribe(c, &sub, 1), MQTT_ERR_INVALID_TOPIC);
    sub.topic = "";
    CHECK_RC(mqtt_client_subscribe(c, &sub, 1), MQTT_ERR_INVALID_TOPIC);
    sub.topic = "a/\xff";
    CHECK_RC(mqtt_client_subscribe(c, &sub, 1), MQTT_ERR_INVALID_UTF8);
    sub.topic = "a/b";
    sub.qos = 3;
    CHECK_RC(mqtt_client_subscribe(c, &sub, 1), MQTT_ERR_INVALID_QOS);
    sub.qos = -1;
    CHECK_RC(mqtt_client_subscribe(c, &sub, 1), MQTT_ERR_INVALID_QOS);
    /* one bad filter among good ones fails the whole call */
    subs[0].topic = ok_topic;
    subs[0].qos = 1;
    subs[1].topic = "x/#/y";
    subs[1].qos = 1;
    CHECK_RC(mqtt_client_subscribe(c, subs, 2), MQTT_ERR_INVALID_TOPIC);

    /* unsubscribe */
    topics[0] = ok_topic;
    topics[1] = NULL;
    CHECK_RC(mqtt_client_unsubscribe(c, NULL, 1), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_unsubscribe(c, topics, 0), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_unsubscribe(c, topics, 2), MQTT_ERR_INVALID_ARGUMENT);
    topics[1] = "a/#/b";
    CHECK_RC(mqtt_client_unsubscribe(c, topics, 2), MQTT_ERR_INVALID_TOPIC);

    /* loops */
    CHECK_RC(mqtt_client_loop_start(c, NULL, NULL), MQTT_OK);
    CHECK_RC(mqtt_client_loop_start(c, NULL, NULL), MQTT_ERR_LOOP_RUNNING);
    CHECK_RC(mqtt_client_loop(c, 0), MQTT_ERR_LOOP_RUNNING);
    CHECK_RC(mqtt_client_loop_stop(c), MQTT_OK);
    CHECK_RC(mqtt_client_loop_stop(c), MQTT_ERR_LOOP_NOT_RUNNING);
    CHECK_OK(rc, mqtt_client_loop(c, 10));

    /* nothing was broken by all that: the client still works */
    sub.topic = ok_topic;
    sub.qos = 1;
    CHECK_OK(rc, mqtt_client_subscribe(c, &sub, 1));
    CHECK_OK(rc, mqtt_client_publish(c, ok_topic, "still fine", 10, 1, false));
    CHECK_RC(mqtt_client_disconnect(c), MQTT_OK);
done:
    mqtt_client_free(c);
}

/* A loopback port with nothing listening: bind an ephemeral port and close it. */
static int closed_port(void)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port = -1;

    if (fd < 0)
        return -1;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
        getsockname(fd, (struct sockaddr *)&addr, &len) == 0)
        port = ntohs(addr.sin_port);
    close(fd);
    return port;
}

static void connect_errors(void)
{
    mqtt_client *c = t_client("connerr", true);
    int port = closed_port(), rc;
    double start;

    CHECK(c != NULL);
    CHECK(port > 0);
    CHECK_RC(mqtt_client_set_reconnect(c, 0, 0), MQTT_OK);
    CHECK_RC(mqtt_client_set_connect_timeout(c, 3000), MQTT_OK);

    /* nothing listens there: refused */
    CHECK_RC(mqtt_client_connect(c, "127.0.0.1", 30, (uint16_t)port), MQTT_ERR_CONNECT_FAILED);

    /* a name that cannot resolve (RFC 6761 .invalid) */
    start = t_now();
    rc = mqtt_client_connect(c, "no-such-host.invalid", 30, t_port);
    if (rc != MQTT_ERR_DNS)
        printf("  note: unresolvable host gave %d (%s) after %.1fs\n", rc, mqtt_strerror(rc),
               t_now() - start);
    CHECK(rc == MQTT_ERR_DNS || rc == MQTT_ERR_TIMEOUT);

    /* not connected yet */
    CHECK_RC(mqtt_client_loop_stop(c), MQTT_ERR_LOOP_NOT_RUNNING);

    /* and the client can still connect to the real broker afterwards */
    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK_RC(mqtt_client_disconnect(c), MQTT_OK);
done:
    mqtt_client_free(c);
}

static struct t_log offline_rx;

static void publish_offline_queues(void)
{
    mqtt_client *c = t_client("offline", false);
    mqtt_client *sub_client = t_client("offline-sub", true);
    mqtt_subscription sub;
    char topic[128];
    int rc;

    memset(&offline_rx, 0, sizeof offline_rx);
    t_topic(topic, sizeof topic, "q");
    CHECK(c != NULL && sub_client != NULL);
    /* QoS 1/2 while never connected: queued, a mid is returned */
    CHECK_OK(rc, mqtt_client_publish(c, topic, "later1", 6, 1, false));
    CHECK(rc > 0);
    CHECK_OK(rc, mqtt_client_publish(c, topic, "later2", 6, 2, false));
    CHECK(rc > 0);
    /* QoS 0 offline is refused by default */
    CHECK_RC(mqtt_client_publish(c, topic, "now", 3, 0, false), MQTT_ERR_NOT_CONNECTED);
    /* bad arguments are still bad offline */
    CHECK_RC(mqtt_client_publish(c, "a/+", "x", 1, 1, false), MQTT_ERR_INVALID_TOPIC);
    CHECK_RC(mqtt_client_publish(c, topic, "x", 1, 7, false), MQTT_ERR_INVALID_QOS);
    /* a subscription while offline is kept for the next connection */
    sub.topic = topic;
    sub.qos = 1;
    CHECK_OK(rc, mqtt_client_subscribe(c, &sub, 1));
    CHECK(rc > 0);

    /* another client listens; once `c` connects, its queue is sent */
    CHECK(mqtt_client_on(sub_client, MQTT_SUBACK, t_on_suback, NULL, 0, NULL) >= 0);
    CHECK_RC(t_connect(sub_client), MQTT_OK);
    CHECK_RC(mqtt_client_loop_start(sub_client, t_record_cb, &offline_rx), MQTT_OK);
    CHECK_OK(rc, t_subscribe_wait(sub_client, topic, 2));
    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK_RC(mqtt_client_loop_start(c, NULL, NULL), MQTT_OK);
    CHECK(t_wait(&offline_rx.count, 2, 5000));
    CHECK_EQ(t_log_count_payload(&offline_rx, "later1"), 1);
    CHECK_EQ(t_log_count_payload(&offline_rx, "later2"), 1);
    CHECK_EQ(t_log_count_payload(&offline_rx, "now"), 0);
done:
    mqtt_client_free(c);
    mqtt_client_free(sub_client);
}

/* ---- NULL for every pointer parameter, and the remaining range checks ---------------- */

/* A heap string of `len` bytes of 'a' (topics / ids / user names just over the limits). */
static char *long_string(size_t len)
{
    char *s = malloc(len + 1);
    if (s != NULL) {
        memset(s, 'a', len);
        s[len] = '\0';
    }
    return s;
}

static void null_every_pointer(void)
{
    mqtt_client *c = t_client("nulls", true);
    mqtt_subscription sub = {"a/b", 1};
    const char *topics[] = {"a/b"};
    mqtt_client *n;

    CHECK(c != NULL);
    /* mqtt_client_new: NULL id */
    n = mqtt_client_new(NULL, true);
    CHECK(n == NULL);
    n = mqtt_client_new(NULL, false);
    CHECK(n == NULL);
    /* the `client` parameter of every function not covered by bad_arguments_offline */
    CHECK_RC(mqtt_client_connect_async(NULL, "127.0.0.1", 30, t_port), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_queue_limits(NULL, 10, 1000), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_max_inflight(NULL, 10), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_max_incoming_qos2(NULL, 10), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_max_packet_size(NULL, 1024), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_offline_qos0(NULL, true), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_resubscribe(NULL, false), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_socket(NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_next_timeout_ms(NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK(!mqtt_client_want_write(NULL));
    CHECK(!mqtt_client_is_connected(NULL));
    /* NULL client with otherwise bad arguments: still INVALID_ARGUMENT, nothing crashes */
    CHECK_RC(mqtt_client_subscribe(NULL, NULL, 0), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_unsubscribe(NULL, NULL, 0), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_publish(NULL, NULL, NULL, 5, 9, false), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_on(NULL, 42, NULL, NULL, 0, NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_connect(NULL, NULL, 30, 1883), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_will(NULL, NULL, NULL, 0, 0, false), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_credentials(NULL, NULL, NULL), MQTT_ERR_INVALID_ARGUMENT);

    /* the other pointer parameters, on a real (offline) client */
    CHECK_RC(mqtt_client_connect(c, NULL, 30, t_port), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_connect_async(c, NULL, 30, t_port), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_on(c, MQTT_CONNACK, NULL, NULL, 0, NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_publish(c, NULL, "x", 1, 1, false), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_publish(c, "a/b", NULL, 1, 1, false), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_subscribe(c, NULL, 1), MQTT_ERR_INVALID_ARGUMENT);
    sub.topic = NULL;
    CHECK_RC(mqtt_client_subscribe(c, &sub, 1), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_unsubscribe(c, NULL, 1), MQTT_ERR_INVALID_ARGUMENT);
    topics[0] = NULL;
    CHECK_RC(mqtt_client_unsubscribe(c, topics, 1), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_will(c, "a/b", NULL, 1, 0, false), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_credentials(c, NULL, "secret"), MQTT_ERR_INVALID_ARGUMENT);
    /* the documented NULLs that are allowed */
    CHECK_RC(mqtt_client_set_credentials(c, "user", NULL), MQTT_OK); /* password nullable */
    CHECK_RC(mqtt_client_set_credentials(c, NULL, NULL), MQTT_OK);   /* clears both */
    CHECK_RC(mqtt_client_set_will(c, NULL, NULL, 0, 0, false), MQTT_OK); /* clears the will */
    CHECK_RC(mqtt_client_loop_start(c, NULL, NULL), MQTT_OK);            /* on_message nullable */
    CHECK_RC(mqtt_client_loop_stop(c), MQTT_OK);
    /* range checks of the setters; the valid values still work afterwards */
    CHECK_RC(mqtt_client_set_queue_limits(c, 0, 1000), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_queue_limits(c, 10, 0), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_queue_limits(c, 10, 1000), MQTT_OK);
    CHECK_RC(mqtt_client_set_max_inflight(c, 0), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_max_inflight(c, 65536), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_max_inflight(c, 65535), MQTT_OK);
    CHECK_RC(mqtt_client_set_max_incoming_qos2(c, 0), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_max_incoming_qos2(c, 1), MQTT_OK);
    CHECK_RC(mqtt_client_set_max_packet_size(c, 15), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_max_packet_size(c, 268435461), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_max_packet_size(c, 16), MQTT_OK);
    CHECK_RC(mqtt_client_set_max_packet_size(c, 268435460), MQTT_OK);
    CHECK(mqtt_client_socket(c) >= 0);
done:
    mqtt_client_free(c);
}

/* mqtt_client_new: invalid ids give NULL; the limits are exact. */
static void client_new_invalid_ids(void)
{
    mqtt_client *c = NULL;
    char *id = long_string(65536);

    CHECK(id != NULL);
    c = mqtt_client_new(id, true); /* 65536 bytes: too long */
    CHECK(c == NULL);
    id[65535] = '\0';
    c = mqtt_client_new(id, true); /* 65535 bytes: the maximum */
    CHECK(c != NULL);
    mqtt_client_free(c);
    c = mqtt_client_new("", false); /* MQTT 5 may assign an id: the check is connect's */
    CHECK(c != NULL);
    CHECK_RC(mqtt_client_connect(c, "127.0.0.1", 30, 1), MQTT_ERR_INVALID_ARGUMENT);
    mqtt_client_free(c);
    c = mqtt_client_new("\xc0\x80", true); /* overlong encoding of U+0000 */
    CHECK(c == NULL);
    c = mqtt_client_new("", true);
    CHECK(c != NULL);
done:
    mqtt_client_free(c);
    free(id);
}

/* Every value that is not an mqtt_command is refused, and a refused registration does not
 * replace the registered callback. */
static int unknown_cmd_pubacks;

static void unknown_cmd_on_puback(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)data;
    (void)user_data;
    t_bump(&unknown_cmd_pubacks);
}

static void on_unknown_command(void)
{
    static const int bad[] = {0, 1, 8, 10, 12, 16, 17, 42, 99, 255, 256, -1, -2, 0x7fffffff,
                              (int)0x80000000u};
    static const int good[] = {MQTT_CONNACK, MQTT_PUBLISH, MQTT_PUBACK,   MQTT_PUBREC,
                               MQTT_PUBREL,  MQTT_PUBCOMP, MQTT_SUBACK,   MQTT_UNSUBACK,
                               MQTT_PINGRESP, MQTT_DISCONNECT, MQTT_AUTH};
    mqtt_client *c = t_client("oncmd", true);
    char topic[128];
    size_t i;
    int mid;

    t_topic(topic, sizeof topic, "x");
    CHECK(c != NULL);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = mqtt_client_on(c, bad[i], noop_cb, NULL, 0, NULL);
        if (rc != MQTT_ERR_INVALID_ARGUMENT) {
            t_failf(__LINE__, "mqtt_client_on(c, %d, ...) returned %d (%s)", bad[i], rc,
                    mqtt_strerror(rc));
            goto done;
        }
        rc = mqtt_client_on(c, bad[i], noop_cb, noop_cond, 5, NULL);
        if (rc != MQTT_ERR_INVALID_ARGUMENT) {
            t_failf(__LINE__, "mqtt_client_on(c, %d, cond) returned %d (%s)", bad[i], rc,
                    mqtt_strerror(rc));
            goto done;
        }
    }
    /* the other generics stay; PUBACK gets the counting one last */
    for (i = 0; i < sizeof good / sizeof good[0]; i++)
        CHECK_RC(mqtt_client_on(c, good[i], noop_cb, NULL, 0, NULL), MQTT_OK);
    CHECK_RC(mqtt_client_on(c, MQTT_PUBACK, unknown_cmd_on_puback, NULL, 0, NULL), MQTT_OK);
    /* refused registrations for PUBACK do not replace it */
    CHECK_RC(mqtt_client_on(c, MQTT_PUBACK, NULL, NULL, 0, NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_on(c, MQTT_PUBACK, NULL, noop_cond, 9, NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK_RC(mqtt_client_loop_start(c, NULL, NULL), MQTT_OK);
    CHECK_OK(mid, mqtt_client_publish(c, topic, "x", 1, 1, false));
    CHECK(t_wait(&unknown_cmd_pubacks, 1, 5000));
done:
    mqtt_client_free(c);
}

/* ---- topics: UTF-8, length, wildcards, filters ----------------------------------------- */

static const char *const bad_utf8[] = {
    "a/\xff",             /* never valid */
    "a/\xc3",             /* truncated sequence */
    "\xc0\x80",           /* overlong U+0000 */
    "a/\xed\xa0\x80",     /* UTF-16 surrogate */
    "a/\xf4\x90\x80\x80", /* beyond U+10FFFF */
};

static const char *const bad_filters[] = {"a/#/b", "a+", "a/+b", "#/a", "a/b#", "", "a/##"};

static void topic_validation(void)
{
    mqtt_client *c = t_client("topics", true);
    mqtt_subscription sub = {"a/b", 1};
    const char *topics[1];
    char *too_long = long_string(65536);
    size_t i;
    int rc;

    CHECK(c != NULL && too_long != NULL);
    /* offline QoS 1 requests are accepted and queued, so validation is what is tested */
    for (i = 0; i < sizeof bad_utf8 / sizeof bad_utf8[0]; i++) {
        sub.topic = bad_utf8[i];
        topics[0] = bad_utf8[i];
        CHECK_RC(mqtt_client_publish(c, bad_utf8[i], "x", 1, 1, false), MQTT_ERR_INVALID_UTF8);
        CHECK_RC(mqtt_client_subscribe(c, &sub, 1), MQTT_ERR_INVALID_UTF8);
        CHECK_RC(mqtt_client_unsubscribe(c, topics, 1), MQTT_ERR_INVALID_UTF8);
        CHECK_RC(mqtt_client_set_will(c, bad_utf8[i], "x", 1, 1, false), MQTT_ERR_INVALID_UTF8);
        CHECK_RC(mqtt_client_set_credentials(c, bad_utf8[i], NULL), MQTT_ERR_INVALID_UTF8);
        rc = mqtt_client_connect(c, bad_utf8[i], 30, t_port);
        CHECK_EQ(rc, MQTT_ERR_INVALID_UTF8);
        CHECK_RC(mqtt_client_connect_async(c, bad_utf8[i], 30, t_port), MQTT_ERR_INVALID_UTF8);
    }
    /* 65536 bytes: over the 65535 limit of an MQTT string */
    sub.topic = too_long;
    topics[0] = too_long;
    CHECK_RC(mqtt_client_publish(c, too_long, "x", 1, 1, false), MQTT_ERR_INVALID_TOPIC);
    CHECK_RC(mqtt_client_subscribe(c, &sub, 1), MQTT_ERR_INVALID_TOPIC);
    CHECK_RC(mqtt_client_unsubscribe(c, topics, 1), MQTT_ERR_INVALID_TOPIC);
    CHECK_RC(mqtt_client_set_will(c, too_long, "x", 1, 1, false), MQTT_ERR_INVALID_TOPIC);
    /* user name over 65535 bytes */
    CHECK_RC(mqtt_client_set_credentials(c, too_long, NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_credentials(c, "u", too_long), MQTT_ERR_INVALID_ARGUMENT);
    /* wildcards (and "") in topic names */
    CHECK_RC(mqtt_client_publish(c, "a/+", "x", 1, 1, false), MQTT_ERR_INVALID_TOPIC);
    CHECK_RC(mqtt_client_publish(c, "#", "x", 1, 1, false), MQTT_ERR_INVALID_TOPIC);
    CHECK_RC(mqtt_client_publish(c, "a/b+", "x", 1, 1, false), MQTT_ERR_INVALID_TOPIC);
    CHECK_RC(mqtt_client_publish(c, "a#", "x", 1, 1, false), MQTT_ERR_INVALID_TOPIC);
    CHECK_RC(mqtt_client_publish(c, "", "x", 1, 1, false), MQTT_ERR_INVALID_TOPIC);
    CHECK_RC(mqtt_client_set_will(c, "", "x", 1, 1, false), MQTT_ERR_INVALID_TOPIC);
    CHECK_RC(mqtt_client_set_will(c, "+", "x", 1, 1, false), MQTT_ERR_INVALID_TOPIC);
    /* invalid filters */
    for (i = 0; i < sizeof bad_filters / sizeof bad_filters[0]; i++) {
        sub.topic = bad_filters[i];
        topics[0] = bad_filters[i];
        rc = mqtt_client_subscribe(c, &sub, 1);
        if (rc != MQTT_ERR_INVALID_TOPIC) {
            t_failf(__LINE__, "subscribe \"%s\" returned %d (%s)", bad_filters[i], rc,
                    mqtt_strerror(rc));
            goto done;
        }
        rc = mqtt_client_unsubscribe(c, topics, 1);
        if (rc != MQTT_ERR_INVALID_TOPIC) {
            t_failf(__LINE__, "unsubscribe \"%s\" returned %d (%s)", bad_filters[i], rc,
                    mqtt_strerror(rc));
            goto done;
        }
    }
    /* QoS out of range everywhere */
    sub.topic = "a/b";
    sub.qos = -1;
    CHECK_RC(mqtt_client_subscribe(c, &sub, 1), MQTT_ERR_INVALID_QOS);
    sub.qos = 3;
    CHECK_RC(mqtt_client_subscribe(c, &sub, 1), MQTT_ERR_INVALID_QOS);
    CHECK_RC(mqtt_client_publish(c, "a/b", "x", 1, -1, false), MQTT_ERR_INVALID_QOS);
    CHECK_RC(mqtt_client_publish(c, "a/b", "x", 1, 3, false), MQTT_ERR_INVALID_QOS);
    CHECK_RC(mqtt_client_set_will(c, "a/b", "x", 1, -1, false), MQTT_ERR_INVALID_QOS);
    CHECK_RC(mqtt_client_set_will(c, "a/b", "x", 1, 3, false), MQTT_ERR_INVALID_QOS);
    /* count 0 / NULL arrays */
    CHECK_RC(mqtt_client_subscribe(c, &sub, 0), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_subscribe(c, NULL, 0), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_subscribe(c, NULL, 3), MQTT_ERR_INVALID_ARGUMENT);
    topics[0] = "a/b";
    CHECK_RC(mqtt_client_unsubscribe(c, topics, 0), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_unsubscribe(c, NULL, 0), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_unsubscribe(c, NULL, 3), MQTT_ERR_INVALID_ARGUMENT);
    /* the limits themselves are fine: a 65535-byte topic, wildcards in valid filters */
    too_long[65535] = '\0';
    CHECK_OK(rc, mqtt_client_publish(c, too_long, "x", 1, 1, false));
    sub.topic = "+/b/#";
    sub.qos = 2;
    CHECK_OK(rc, mqtt_client_subscribe(c, &sub, 1));
    CHECK_RC(mqtt_client_set_will(c, "a/b", "x", 1, 2, true), MQTT_OK);
done:
    mqtt_client_free(c);
    free(too_long);
}

/* set_will: payloads over 65535 bytes are refused. */
static void will_payload_too_large(void)
{
    mqtt_client *c = t_client("will", true);
    char *payload = long_string(65536);

    CHECK(c != NULL && payload != NULL);
    CHECK_RC(mqtt_client_set_will(c, "a/b", payload, 65536, 0, false),
             MQTT_ERR_PAYLOAD_TOO_LARGE);
    CHECK_RC(mqtt_client_set_will(c, "a/b", payload, 65535, 0, false), MQTT_OK);
done:
    mqtt_client_free(c);
    free(payload);
}

/* ---- failed calls change nothing -------------------------------------------------------- */

/* Every failing publish / subscribe / unsubscribe of this list is attempted between the
 * successful calls of `mid_sequence`. */
static void fail_everything(mqtt_client *c)
{
    static char big[200];
    mqtt_subscription sub = {"a/b", 1};
    mqtt_subscription subs[2] = {{"ok/1", 1}, {"x/#/y", 1}};
    const char *topics[2] = {"ok/1", "a/#/b"};
    const char *null_topics[2] = {"ok/1", NULL};
    size_t i;

    (void)mqtt_client_publish(c, NULL, "x", 1, 1, false);
    (void)mqtt_client_publish(c, "a/b", NULL, 1, 1, false);
    (void)mqtt_client_publish(c, "a/+", "x", 1, 1, false);
    (void)mqtt_client_publish(c, "", "x", 1, 2, false);
    (void)mqtt_client_publish(c, "a/\xff", "x", 1, 1, false);
    (void)mqtt_client_publish(c, "a/b", "x", 1, 3, false);
    (void)mqtt_client_publish(c, "a/b", "x", 1, -1, false);
    (void)mqtt_client_publish(c, "a/b", big, sizeof big, 1, false); /* over 64 bytes */
    for (i = 0; i < sizeof bad_filters / sizeof bad_filters[0]; i++) {
        sub.topic = bad_filters[i];
        (void)mqtt_client_subscribe(c, &sub, 1);
    }
    sub.topic = "a/b";
    sub.qos = 3;
    (void)mqtt_client_subscribe(c, &sub, 1);
    (void)mqtt_client_subscribe(c, &sub, 0);
    (void)mqtt_client_subscribe(c, NULL, 1);
    (void)mqtt_client_subscribe(c, subs, 2);
    (void)mqtt_client_unsubscribe(c, topics, 2);
    (void)mqtt_client_unsubscribe(c, null_topics, 2);
    (void)mqtt_client_unsubscribe(c, topics, 0);
    (void)mqtt_client_unsubscribe(c, NULL, 1);
}

/* Publish QoS 1, subscribe, unsubscribe, publish QoS 2 (with `fail` between each); the
 * mids go to mids[0..3]. Returns 0 on success. */
static int mid_sequence(mqtt_client *c, const char *topic, int fail, int mids[4])
{
    mqtt_subscription sub;
    const char *topics[1];

    sub.topic = topic;
    sub.qos = 1;
    topics[0] = topic;
    if (fail)
        fail_everything(c);
    if ((mids[0] = mqtt_client_publish(c, topic, "m", 1, 1, false)) < 0)
        return -1;
    if (fail)
        fail_everything(c);
    if ((mids[1] = mqtt_client_subscribe(c, &sub, 1)) < 0)
        return -1;
    if (fail)
        fail_everything(c);
    if ((mids[2] = mqtt_client_unsubscribe(c, topics, 1)) < 0)
        return -1;
    if (fail)
        fail_everything(c);
    if ((mids[3] = mqtt_client_publish(c, topic, "m", 1, 2, false)) < 0)
        return -1;
    return 0;
}

/* A failing call consumes no message id: after any number of failures, the next successful
 * call gets the mid a fresh client would. Offline (queued) and connected. */
static void failed_calls_consume_no_mid(void)
{
    mqtt_client *ref = t_client("mid-ref", true);
    mqtt_client *c = t_client("mid-fail", true);
    mqtt_client *ref2 = t_client("mid-ref2", true);
    mqtt_client *c2 = t_client("mid-fail2", true);
    int expect[4], got[4], i;
    char topic[128];

    t_topic(topic, sizeof topic, "mid");
    CHECK(ref != NULL && c != NULL && ref2 != NULL && c2 != NULL);
    CHECK_RC(mqtt_client_set_max_packet_size(c, 64), MQTT_OK);
    CHECK_RC(mqtt_client_set_max_packet_size(c2, 64), MQTT_OK);
    CHECK_RC(mqtt_client_set_max_packet_size(ref, 64), MQTT_OK);
    CHECK_RC(mqtt_client_set_max_packet_size(ref2, 64), MQTT_OK);
    /* offline */
    CHECK_EQ(mid_sequence(ref, topic, 0, expect), 0);
    CHECK_EQ(mid_sequence(c, topic, 1, got), 0);
    for (i = 0; i < 4; i++)
        CHECK_EQ(got[i], expect[i]);
    /* connected, with the loop thread running */
    CHECK_RC(t_connect(ref2), MQTT_OK);
    CHECK_RC(t_connect(c2), MQTT_OK);
    CHECK_RC(mqtt_client_loop_start(ref2, NULL, NULL), MQTT_OK);
    CHECK_RC(mqtt_client_loop_start(c2, NULL, NULL), MQTT_OK);
    CHECK_EQ(mid_sequence(ref2, topic, 0, expect), 0);
    CHECK_EQ(mid_sequence(c2, topic, 1, got), 0);
    for (i = 0; i < 4; i++)
        CHECK_EQ(got[i], expect[i]);
    CHECK(mqtt_client_is_connected(c2));
done:
    mqtt_client_free(ref);
    mqtt_client_free(c);
    mqtt_client_free(ref2);
    mqtt_client_free(c2);
}

/* A failing subscribe / unsubscribe leaves no pending request: only the successful ones
 * are answered. Requests made while offline are sent on connection, so the failed ones are
 * tried both offline and online. A QoS 1 round trip is the barrier: acks come in order. */
struct ack_counts {
    int subacks, unsubacks, pubacks;
    int suback_mid, unsuback_mid;
};

static struct ack_counts acks;

static void count_acks(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)user_data;
    pthread_mutex_lock(&t_lock);
    if (data->command == MQTT_SUBACK) {
        acks.subacks++;
        acks.suback_mid = data->mid;
    } else if (data->command == MQTT_UNSUBACK) {
        acks.unsubacks++;
        acks.unsuback_mid = data->mid;
    } else if (data->command == MQTT_PUBACK) {
        acks.pubacks++;
    }
    t_signal_locked();
    pthread_mutex_unlock(&t_lock);
}

static void failed_requests_leave_nothing_pending(void)
{
    mqtt_client *c = t_client("pending", true);
    mqtt_subscription sub;
    const char *topics[1];
    char topic[128];
    int sub_mid, unsub_mid, mid;

    memset(&acks, 0, sizeof acks);
    t_topic(topic, sizeof topic, "p");
    CHECK(c != NULL);
    CHECK_RC(mqtt_client_set_max_packet_size(c, 64), MQTT_OK);
    CHECK_RC(mqtt_client_on(c, MQTT_SUBACK, count_acks, NULL, 0, NULL), MQTT_OK);
    CHECK_RC(mqtt_client_on(c, MQTT_UNSUBACK, count_acks, NULL, 0, NULL), MQTT_OK);
    CHECK_RC(mqtt_client_on(c, MQTT_PUBACK, count_acks, NULL, 0, NULL), MQTT_OK);
    fail_everything(c); /* offline: nothing may be queued */
    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK_RC(mqtt_client_loop_start(c, NULL, NULL), MQTT_OK);
    fail_everything(c); /* online: nothing may be sent */
    sub.topic = topic;
    sub.qos = 1;
    topics[0] = topic;
    CHECK_OK(sub_mid, mqtt_client_subscribe(c, &sub, 1));
    fail_everything(c);
    CHECK_OK(unsub_mid, mqtt_client_unsubscribe(c, topics, 1));
    fail_everything(c);
    CHECK_OK(mid, mqtt_client_publish(c, topic, "barrier", 7, 1, false));
    CHECK(t_wait(&acks.pubacks, 1, 5000));
    pthread_mutex_lock(&t_lock);
    {
        struct ack_counts seen = acks;
        pthread_mutex_unlock(&t_lock);
        CHECK_EQ(seen.subacks, 1);
        CHECK_EQ(seen.suback_mid, sub_mid);
        CHECK_EQ(seen.unsubacks, 1);
        CHECK_EQ(seen.unsuback_mid, unsub_mid);
        CHECK_EQ(seen.pubacks, 1);
    }
    CHECK(mqtt_client_is_connected(c));
done:
    mqtt_client_free(c);
}

/* A payload over the maximum packet size is refused with PAYLOAD_TOO_LARGE, at every QoS,
 * online and offline; the client stays connected and smaller messages still go through;
 * a refused set_max_packet_size keeps the previous limit. */
static struct t_log big_rx;

static void payload_too_large(void)
{
    mqtt_client *c = t_client("big", true);
    mqtt_client *off = t_client("big-off", true);
    char payload[100], topic[128];
    int qos, rc, sub_mid;

    memset(&big_rx, 0, sizeof big_rx);
    memset(payload, 'p', sizeof payload);
    t_topic(topic, sizeof topic, "b");
    CHECK(c != NULL && off != NULL);
    CHECK_RC(mqtt_client_set_max_packet_size(c, 64), MQTT_OK);
    CHECK_RC(mqtt_client_set_max_packet_size(c, 15), MQTT_ERR_INVALID_ARGUMENT); /* kept: 64 */
    CHECK_RC(mqtt_client_set_max_packet_size(off, 64), MQTT_OK);
    CHECK_RC(mqtt_client_set_offline_qos0(off, true), MQTT_OK);
    for (qos = 0; qos <= 2; qos++)
        CHECK_RC(mqtt_client_publish(off, topic, payload, sizeof payload, qos, false),
                 MQTT_ERR_PAYLOAD_TOO_LARGE);

    CHECK_RC(mqtt_client_on(c, MQTT_SUBACK, t_on_suback, NULL, 0, NULL), MQTT_OK);
    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK_RC(mqtt_client_loop_start(c, t_record_cb, &big_rx), MQTT_OK);
    CHECK_OK(sub_mid, t_subscribe_wait(c, topic, 1));
    for (qos = 0; qos <= 2; qos++)
        CHECK_RC(mqtt_client_publish(c, topic, payload, sizeof payload, qos, false),
                 MQTT_ERR_PAYLOAD_TOO_LARGE);
    CHECK(mqtt_client_is_connected(c));
    CHECK_OK(rc, mqtt_client_publish(c, topic, "small", 5, 1, false));
    CHECK(t_wait(&big_rx.count, 1, 5000));
    CHECK_EQ(t_log_count_payload(&big_rx, "small"), 1);
    CHECK(mqtt_client_is_connected(c));
    /* raising the limit lets the same payload through */
    CHECK_RC(mqtt_client_set_max_packet_size(c, 4096), MQTT_OK);
    CHECK_OK(rc, mqtt_client_publish(c, topic, payload, sizeof payload, 1, false));
    CHECK(t_wait(&big_rx.count, 2, 5000));
    CHECK_EQ(t_get(&big_rx.count), 2);
done:
    mqtt_client_free(c);
    mqtt_client_free(off);
}

/* After disconnect: QoS 0 publish and a second disconnect are NOT_CONNECTED; the client
 * can connect again. With and without a loop thread. */
static int after_disc_disconnects;

static void after_disc_on_disconnect(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)data;
    (void)user_data;
    t_bump(&after_disc_disconnects);
}

static void calls_after_disconnect(void)
{
    mqtt_client *c = t_client("afterdisc", true);
    char topic[128];
    int rc;

    t_topic(topic, sizeof topic, "d");
    CHECK(c != NULL);
    CHECK_RC(mqtt_client_on(c, MQTT_DISCONNECT, after_disc_on_disconnect, NULL, 0, NULL),
             MQTT_OK);
    /* without a loop thread: the DISCONNECT is written before disconnect returns */
    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK_RC(mqtt_client_disconnect(c), MQTT_OK);
    CHECK(!mqtt_client_is_connected(c));
    CHECK_RC(mqtt_client_publish(c, topic, "x", 1, 0, false), MQTT_ERR_NOT_CONNECTED);
    CHECK_RC(mqtt_client_disconnect(c), MQTT_ERR_NOT_CONNECTED);
    CHECK_RC(mqtt_client_loop_stop(c), MQTT_ERR_LOOP_NOT_RUNNING);
    /* and again */
    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK(mqtt_client_is_connected(c));
    CHECK_OK(rc, mqtt_client_publish(c, topic, "x", 1, 0, false));
    /* with the loop thread: wait for the DISCONNECT callback */
    CHECK_RC(mqtt_client_loop_start(c, NULL, NULL), MQTT_OK);
    rc = t_get(&after_disc_disconnects);
    CHECK_RC(mqtt_client_disconnect(c), MQTT_OK);
    CHECK(t_wait(&after_disc_disconnects, rc + 1, 5000));
    CHECK(!mqtt_client_is_connected(c));
    CHECK_RC(mqtt_client_publish(c, topic, "x", 1, 0, false), MQTT_ERR_NOT_CONNECTED);
    CHECK_RC(mqtt_client_disconnect(c), MQTT_ERR_NOT_CONNECTED);
    CHECK_RC(mqtt_client_loop_stop(c), MQTT_OK);
    CHECK_RC(mqtt_client_loop_stop(c), MQTT_ERR_LOOP_NOT_RUNNING);
    CHECK_RC(mqtt_client_disconnect(c), MQTT_ERR_NOT_CONNECTED);
done:
    mqtt_client_free(c);
}

/* Loop misuse: loop_start twice, mqtt_client_loop / next_timeout_ms while the loop thread
 * runs, loop_stop twice; the connection survives all of it. */
static struct t_log loop_rx;

static void loop_misuse(void)
{
    mqtt_client *c = t_client("loops", true);
    char topic[128];
    int rc, sub_mid;

    memset(&loop_rx, 0, sizeof loop_rx);
    t_topic(topic, sizeof topic, "l");
    CHECK(c != NULL);
    CHECK_RC(mqtt_client_on(c, MQTT_SUBACK, t_on_suback, NULL, 0, NULL), MQTT_OK);
    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK_RC(mqtt_client_loop_start(c, t_record_cb, &loop_rx), MQTT_OK);
    CHECK_RC(mqtt_client_loop_start(c, NULL, NULL), MQTT_ERR_LOOP_RUNNING);
    CHECK_RC(mqtt_client_loop_start(c, noop_cb, NULL), MQTT_ERR_LOOP_RUNNING);
    CHECK_RC(mqtt_client_loop(c, 0), MQTT_ERR_LOOP_RUNNING);
    CHECK_RC(mqtt_client_loop(c, 10), MQTT_ERR_LOOP_RUNNING);
    CHECK_RC(mqtt_client_loop(c, -1), MQTT_ERR_LOOP_RUNNING);
    /* The external-loop queries are for a client nobody else runs. */
    CHECK_RC(mqtt_client_next_timeout_ms(c), MQTT_ERR_LOOP_RUNNING);
    CHECK(!mqtt_client_want_write(c));
    /* the refused loop_start did not replace on_message: messages still reach loop_rx */
    CHECK_OK(sub_mid, t_subscribe_wait(c, topic, 1));
    CHECK_OK(rc, mqtt_client_publish(c, topic, "one", 3, 1, false));
    CHECK(t_wait(&loop_rx.count, 1, 5000));
    CHECK_EQ(t_log_count_payload(&loop_rx, "one"), 1);
    CHECK_RC(mqtt_client_loop_stop(c), MQTT_OK);
    CHECK_RC(mqtt_client_loop_stop(c), MQTT_ERR_LOOP_NOT_RUNNING);
    CHECK(mqtt_client_is_connected(c));
    CHECK_OK(rc, mqtt_client_loop(c, 0));
    CHECK(mqtt_client_next_timeout_ms(c) >= -1);
    /* the loop can be started again and the connection still works */
    CHECK_RC(mqtt_client_loop_start(c, t_record_cb, &loop_rx), MQTT_OK);
    CHECK_OK(rc, mqtt_client_publish(c, topic, "two", 3, 1, false));
    CHECK(t_wait(&loop_rx.count, 2, 5000));
    CHECK_EQ(t_log_count_payload(&loop_rx, "two"), 1);
    CHECK(mqtt_client_is_connected(c));
    CHECK_RC(mqtt_client_disconnect(c), MQTT_OK);
done:
    mqtt_client_free(c);
}

/* A connected client refuses a second connect / connect_async and stays connected. */
static void connect_while_connected(void)
{
    mqtt_client *c = t_client("twice", true);
    int rc;

    CHECK(c != NULL);
    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK_RC(mqtt_client_connect(c, t_host, 30, t_port), MQTT_ERR_ALREADY_CONNECTED);
    CHECK_RC(mqtt_client_connect_async(c, t_host, 30, t_port), MQTT_ERR_ALREADY_CONNECTED);
    CHECK(mqtt_client_is_connected(c));
    CHECK_OK(rc, mqtt_client_loop(c, 10));
    CHECK(mqtt_client_is_connected(c));
    CHECK_RC(mqtt_client_disconnect(c), MQTT_OK);
done:
    mqtt_client_free(c);
}

int main(int argc, char **argv)
{
    const char *only = t_init(argc, argv);

    RUN(strerror_every_code);
    RUN(version);
    RUN(topic_matches);
    RUN(topic_matches_invalid_inputs);
    RUN(client_new_and_free);
    RUN(bad_arguments_offline);
    RUN(bad_arguments_connected);
    RUN(connect_errors);
    RUN(publish_offline_queues);
    RUN(null_every_pointer);
    RUN(client_new_invalid_ids);
    RUN(on_unknown_command);
    RUN(topic_validation);
    RUN(will_payload_too_large);
    RUN(failed_calls_consume_no_mid);
    RUN(failed_requests_leave_nothing_pending);
    RUN(payload_too_large);
    RUN(calls_after_disconnect);
    RUN(loop_misuse);
    RUN(connect_while_connected);
    return t_finish("api_errors");
}
