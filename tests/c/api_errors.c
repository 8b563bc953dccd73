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
    MQTT_ERR_LOOP_RUNNING,
    MQTT_ERR_LOOP_NOT_RUNNING,
    MQTT_ERR_IN_CALLBACK,
    MQTT_ERR_INTERNAL,
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
    CHECK_EQ(MQTT_ERR_LOOP_RUNNING, -30);
    CHECK_EQ(MQTT_ERR_INTERNAL, -33);

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
    return t_finish("api_errors");
}
