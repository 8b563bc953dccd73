/*
 * v5_api.c - the MQTT 5.0 functions of the C ABI: every NULL and bad argument returns the
 * code mqtt.h documents and changes nothing (property lists, protocol choice, v5 calls on
 * a 3.1.1 client, properties a packet may not carry, subscription options, DISCONNECT
 * reason codes); then real round trips through the test broker: properties of a QoS 1
 * message, SUBACK / UNSUBACK reason codes, subscription identifiers, will properties,
 * a callback's read-only list.
 *
 * Usage: v5_api host port [case]
 */
#include "test_util.h"

/* ---- helpers --------------------------------------------------------------------------- */

static mqtt_client *v5_client(const char *name, bool clean_session)
{
    mqtt_client *c = t_client(name, clean_session);
    if (c != NULL && mqtt_client_set_protocol(c, MQTT_PROTOCOL_V5) != MQTT_OK) {
        mqtt_client_free(c);
        return NULL;
    }
    return c;
}

/* How often each identifier 0..63 occurs: equal snapshots = an unchanged list (together
 * with the values checked by each case). */
struct snap {
    size_t count[64];
};

static void snapshot(const mqtt_properties *p, struct snap *s)
{
    int id;
    for (id = 0; id < 64; id++)
        s->count[id] = mqtt_properties_count(p, id);
}

static int same_snap(const mqtt_properties *p, const struct snap *before)
{
    struct snap now;
    snapshot(p, &now);
    return memcmp(&now, before, sizeof now) == 0;
}

static size_t total(const mqtt_properties *p)
{
    size_t n = 0;
    int id;
    for (id = 0; id < 64; id++)
        n += mqtt_properties_count(p, id);
    return n;
}

/* A new list holding one integer / string property (NULL when that fails). */
static mqtt_properties *one_int(int id, uint32_t value)
{
    mqtt_properties *p = mqtt_properties_new();
    if (p != NULL && mqtt_properties_add_int(p, id, value) != MQTT_OK) {
        mqtt_properties_free(p);
        return NULL;
    }
    return p;
}

static mqtt_properties *one_string(int id, const char *value)
{
    mqtt_properties *p = mqtt_properties_new();
    if (p != NULL && mqtt_properties_add_string(p, id, value) != MQTT_OK) {
        mqtt_properties_free(p);
        return NULL;
    }
    return p;
}

static mqtt_properties *one_user(const char *key, const char *value)
{
    mqtt_properties *p = mqtt_properties_new();
    if (p != NULL && mqtt_properties_add_user(p, key, value) != MQTT_OK) {
        mqtt_properties_free(p);
        return NULL;
    }
    return p;
}

/* Whether the string property `id` of `p` is exactly `expected` (length-checked). */
static int string_is(const mqtt_properties *p, int id, const char *expected)
{
    const char *s = NULL;
    size_t len = 0;
    return mqtt_properties_get_string(p, id, &s, &len) == MQTT_OK && s != NULL &&
           len == strlen(expected) && memcmp(s, expected, len) == 0;
}

static int user_is(const mqtt_properties *p, size_t index, const char *key, const char *value)
{
    const char *k = NULL, *v = NULL;
    size_t kl = 0, vl = 0;
    return mqtt_properties_get_user_at(p, index, &k, &kl, &v, &vl) == MQTT_OK && k != NULL &&
           v != NULL && kl == strlen(key) && memcmp(k, key, kl) == 0 && vl == strlen(value) &&
           memcmp(v, value, vl) == 0;
}

static char *long_string(size_t len)
{
    char *s = malloc(len + 1);
    if (s != NULL) {
        memset(s, 'a', len);
        s[len] = '\0';
    }
    return s;
}

/* ---- property lists: NULL arguments ------------------------------------------------------ */

static void properties_null_arguments(void)
{
    mqtt_properties *p = mqtt_properties_new();
    struct snap before;
    uint32_t v = 77;
    const char *s = "untouched";
    const uint8_t *d = (const uint8_t *)"untouched";
    size_t len = 99;

    CHECK(p != NULL);
    /* NULL list */
    CHECK(mqtt_properties_copy(NULL) == NULL);
    mqtt_properties_free(NULL); /* a no-op */
    CHECK_RC(mqtt_properties_clear(NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_properties_add_int(NULL, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, 5),
             MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_properties_add_string(NULL, MQTT_PROP_CONTENT_TYPE, "t"),
             MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_properties_add_binary(NULL, MQTT_PROP_CORRELATION_DATA, "x", 1),
             MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_properties_add_user(NULL, "k", "v"), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_properties_get_int(NULL, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, &v),
             MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_properties_get_string(NULL, MQTT_PROP_CONTENT_TYPE, &s, &len),
             MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_properties_get_binary(NULL, MQTT_PROP_CORRELATION_DATA, &d, &len),
             MQTT_ERR_INVALID_ARGUMENT);
    CHECK_EQ(mqtt_properties_count(NULL, MQTT_PROP_USER_PROPERTY), 0);
    CHECK_RC(mqtt_properties_get_int_at(NULL, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 0, &v),
             MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_properties_get_user_at(NULL, 0, &s, &len, &s, &len),
             MQTT_ERR_INVALID_ARGUMENT);
    CHECK_EQ(v, 77);
    CHECK_EQ(len, 99);
    CHECK(strcmp(s, "untouched") == 0);

    /* NULL values and out-pointers on a real list */
    CHECK_RC(mqtt_properties_add_int(p, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, 60), MQTT_OK);
    CHECK_RC(mqtt_properties_add_string(p, MQTT_PROP_CONTENT_TYPE, "text/plain"), MQTT_OK);
    CHECK_RC(mqtt_properties_add_binary(p, MQTT_PROP_CORRELATION_DATA, "\x01\x02", 2), MQTT_OK);
    CHECK_RC(mqtt_properties_add_user(p, "k", "v"), MQTT_OK);
    snapshot(p, &before);
    CHECK_EQ(total(p), 4);
    CHECK_RC(mqtt_properties_add_string(p, MQTT_PROP_CONTENT_TYPE, NULL),
             MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_properties_add_binary(p, MQTT_PROP_CORRELATION_DATA, NULL, 3),
             MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_properties_add_user(p, NULL, "v"), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_properties_add_user(p, "k", NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_properties_add_user(p, NULL, NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK(same_snap(p, &before));
    CHECK_RC(mqtt_properties_get_int(p, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, NULL),
             MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_properties_get_int_at(p, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, 0, NULL),
             MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_properties_get_string(p, MQTT_PROP_CONTENT_TYPE, NULL, &len),
             MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_properties_get_binary(p, MQTT_PROP_CORRELATION_DATA, NULL, &len),
             MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_properties_get_binary(p, MQTT_PROP_CORRELATION_DATA, &d, NULL),
             MQTT_ERR_INVALID_ARGUMENT);
    CHECK_EQ(len, 99);
    /* get_string's `len` and all four of get_user_at's out-pointers may be NULL */
    CHECK_RC(mqtt_properties_get_string(p, MQTT_PROP_CONTENT_TYPE, &s, NULL), MQTT_OK);
    CHECK(memcmp(s, "text/plain", 10) == 0);
    CHECK_RC(mqtt_properties_get_user_at(p, 0, NULL, NULL, NULL, NULL), MQTT_OK);
    CHECK_RC(mqtt_properties_get_user_at(p, 1, NULL, NULL, NULL, NULL), MQTT_ERR_NOT_FOUND);
    /* binary data may be NULL when its length is 0 */
    CHECK_RC(mqtt_properties_add_binary(p, MQTT_PROP_AUTHENTICATION_DATA, NULL, 0), MQTT_OK);
    CHECK_RC(mqtt_properties_get_binary(p, MQTT_PROP_AUTHENTICATION_DATA, &d, &len), MQTT_OK);
    CHECK_EQ(len, 0);
    CHECK_EQ(total(p), 5);
done:
    mqtt_properties_free(p);
}

/* ---- property lists: invalid additions leave the list as it was -------------------------- */

struct bad_int {
    int id;
    uint32_t value;
    const char *why;
};

static void properties_add_invalid(void)
{
    static const struct bad_int bad_ints[] = {
        /* unknown identifiers */
        {0, 1, "identifier 0"},
        {4, 1, "identifier 4 (undefined)"},
        {0x2B, 1, "identifier 43 (past the last)"},
        {0x7F, 1, "identifier 127"},
        {255, 1, "identifier 255"},
        {256, 1, "identifier 256 (not a byte)"},
        {-1, 1, "identifier -1"},
        /* not integer properties */
        {MQTT_PROP_CONTENT_TYPE, 1, "a string property"},
        {MQTT_PROP_CORRELATION_DATA, 1, "a binary property"},
        {MQTT_PROP_USER_PROPERTY, 1, "the string pair"},
        /* out of range */
        {MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, 2, "byte flag 2"},
        {MQTT_PROP_REQUEST_PROBLEM_INFORMATION, 2, "byte flag 2"},
        {MQTT_PROP_REQUEST_RESPONSE_INFORMATION, 255, "byte flag 255"},
        {MQTT_PROP_RETAIN_AVAILABLE, 256, "byte flag 256"},
        {MQTT_PROP_MAXIMUM_QOS, 2, "Maximum QoS 2"},
        {MQTT_PROP_RECEIVE_MAXIMUM, 0, "Receive Maximum 0"},
        {MQTT_PROP_RECEIVE_MAXIMUM, 65536, "Receive Maximum over 2 bytes"},
        {MQTT_PROP_TOPIC_ALIAS, 0, "Topic Alias 0"},
        {MQTT_PROP_TOPIC_ALIAS_MAXIMUM, 70000, "Topic Alias Maximum over 2 bytes"},
        {MQTT_PROP_SERVER_KEEP_ALIVE, 65536, "Server Keep Alive over 2 bytes"},
        {MQTT_PROP_MAXIMUM_PACKET_SIZE, 0, "Maximum Packet Size 0"},
        {MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 0, "Subscription Identifier 0"},
        {MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 268435456, "Subscription Identifier > 268435455"},
        {MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 0xFFFFFFFFu, "Subscription Identifier 2^32-1"},
    };
    mqtt_properties *p = mqtt_properties_new();
    struct snap before;
    char *too_long = long_string(65536);
    char blob[4] = {0, 1, 0, 2};
    uint32_t v;
    size_t i;

    CHECK(p != NULL && too_long != NULL);
    CHECK_RC(mqtt_properties_add_int(p, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, 30), MQTT_OK);
    CHECK_RC(mqtt_properties_add_user(p, "first", "1"), MQTT_OK);
    snapshot(p, &before);

    for (i = 0; i < sizeof bad_ints / sizeof bad_ints[0]; i++) {
        int rc = mqtt_properties_add_int(p, bad_ints[i].id, bad_ints[i].value);
        if (rc != MQTT_ERR_INVALID_PROPERTY)
            t_failf(__LINE__, "add_int(%d, %lu) (%s) returned %d, expected INVALID_PROPERTY",
                    bad_ints[i].id, (unsigned long)bad_ints[i].value, bad_ints[i].why, rc);
    }
    CHECK(!t_case_failed);
    CHECK(same_snap(p, &before));

    /* strings: unknown id, wrong type, too long, not UTF-8 */
    CHECK_RC(mqtt_properties_add_string(p, 4, "x"), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_properties_add_string(p, -5, "x"), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_properties_add_string(p, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, "x"),
             MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_properties_add_string(p, MQTT_PROP_CORRELATION_DATA, "x"),
             MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_properties_add_string(p, MQTT_PROP_USER_PROPERTY, "x"),
             MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_properties_add_string(p, MQTT_PROP_CONTENT_TYPE, too_long),
             MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_properties_add_string(p, MQTT_PROP_CONTENT_TYPE, "bad\xff"),
             MQTT_ERR_INVALID_UTF8);
    CHECK_RC(mqtt_properties_add_string(p, MQTT_PROP_RESPONSE_TOPIC, "\xc3"), /* truncated */
             MQTT_ERR_INVALID_UTF8);
    CHECK_RC(mqtt_properties_add_string(p, MQTT_PROP_REASON_STRING, "\xc0\xaf"), /* overlong */
             MQTT_ERR_INVALID_UTF8);
    CHECK_RC(mqtt_properties_add_string(p, MQTT_PROP_CONTENT_TYPE, "\xed\xa0\x80"), /* surrogate */
             MQTT_ERR_INVALID_UTF8);
    CHECK(same_snap(p, &before));

    /* binary: unknown id, wrong type, too long */
    CHECK_RC(mqtt_properties_add_binary(p, 4, blob, sizeof blob), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_properties_add_binary(p, MQTT_PROP_CONTENT_TYPE, blob, sizeof blob),
             MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_properties_add_binary(p, MQTT_PROP_SESSION_EXPIRY_INTERVAL, blob, sizeof blob),
             MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_properties_add_binary(p, MQTT_PROP_USER_PROPERTY, blob, sizeof blob),
             MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_properties_add_binary(p, MQTT_PROP_CORRELATION_DATA, too_long, 65536),
             MQTT_ERR_INVALID_PROPERTY);
    CHECK(same_snap(p, &before));

    /* user properties: too long, not UTF-8 (key or value) */
    CHECK_RC(mqtt_properties_add_user(p, too_long, "v"), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_properties_add_user(p, "k", too_long), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_properties_add_user(p, "k\xff", "v"), MQTT_ERR_INVALID_UTF8);
    CHECK_RC(mqtt_properties_add_user(p, "k", "\xed\xa0\x80"), MQTT_ERR_INVALID_UTF8);
    CHECK(same_snap(p, &before));
    CHECK_EQ(total(p), 2);
    CHECK_RC(mqtt_properties_get_int(p, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, &v), MQTT_OK);
    CHECK_EQ(v, 30);
    CHECK(user_is(p, 0, "first", "1"));

    /* the limits themselves are fine */
    CHECK_RC(mqtt_properties_add_int(p, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 1), MQTT_OK);
    CHECK_RC(mqtt_properties_add_int(p, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 268435455), MQTT_OK);
    CHECK_RC(mqtt_properties_add_int(p, MQTT_PROP_RECEIVE_MAXIMUM, 65535), MQTT_OK);
    CHECK_RC(mqtt_properties_add_int(p, MQTT_PROP_MAXIMUM_QOS, 1), MQTT_OK);
    CHECK_RC(mqtt_properties_add_int(p, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, 0), MQTT_OK);
    CHECK_RC(mqtt_properties_add_int(p, MQTT_PROP_SESSION_EXPIRY_INTERVAL, 0xFFFFFFFFu), MQTT_OK);
    CHECK_RC(mqtt_properties_add_int(p, MQTT_PROP_TOPIC_ALIAS_MAXIMUM, 0), MQTT_OK);
    too_long[65535] = '\0';
    CHECK_RC(mqtt_properties_add_string(p, MQTT_PROP_CONTENT_TYPE, too_long), MQTT_OK);
    CHECK_RC(mqtt_properties_add_binary(p, MQTT_PROP_CORRELATION_DATA, too_long, 65535), MQTT_OK);
    CHECK_RC(mqtt_properties_add_user(p, too_long, ""), MQTT_OK);
    CHECK_RC(mqtt_properties_add_string(p, MQTT_PROP_REASON_STRING, "h\xc3\xa9 \xe2\x82\xac"),
             MQTT_OK);
    CHECK_EQ(total(p), 13);
    CHECK_EQ(mqtt_properties_count(p, MQTT_PROP_SUBSCRIPTION_IDENTIFIER), 2);
    CHECK_RC(mqtt_properties_get_int_at(p, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 1, &v), MQTT_OK);
    CHECK_EQ(v, 268435455);
    CHECK_RC(mqtt_properties_get_int(p, MQTT_PROP_SESSION_EXPIRY_INTERVAL, &v), MQTT_OK);
    CHECK(v == 0xFFFFFFFFu);
done:
    mqtt_properties_free(p);
    free(too_long);
}

/* ---- property lists: reading -------------------------------------------------------------- */

static void properties_get(void)
{
    mqtt_properties *p = mqtt_properties_new();
    mqtt_properties *empty = mqtt_properties_new();
    static const uint8_t blob[5] = {0x00, 0xff, 0x00, 0x10, 0x00};
    uint32_t v = 0xDEADBEEFu;
    const char *s = NULL;
    const char *sentinel = "sentinel";
    const uint8_t *d = NULL;
    size_t len = 12345;

    CHECK(p != NULL && empty != NULL);
    /* absent: NOT_FOUND, out-parameters untouched */
    s = sentinel;
    d = (const uint8_t *)sentinel;
    CHECK_RC(mqtt_properties_get_int(empty, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, &v),
             MQTT_ERR_NOT_FOUND);
    CHECK_RC(mqtt_properties_get_int_at(empty, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 0, &v),
             MQTT_ERR_NOT_FOUND);
    CHECK_RC(mqtt_properties_get_string(empty, MQTT_PROP_CONTENT_TYPE, &s, &len),
             MQTT_ERR_NOT_FOUND);
    CHECK_RC(mqtt_properties_get_binary(empty, MQTT_PROP_CORRELATION_DATA, &d, &len),
             MQTT_ERR_NOT_FOUND);
    CHECK_RC(mqtt_properties_get_user_at(empty, 0, &s, &len, &s, &len), MQTT_ERR_NOT_FOUND);
    CHECK(v == 0xDEADBEEFu);
    CHECK(s == sentinel);
    CHECK(d == (const uint8_t *)sentinel);
    CHECK_EQ(len, 12345);
    CHECK_EQ(total(empty), 0);

    CHECK_RC(mqtt_properties_add_string(p, MQTT_PROP_CONTENT_TYPE, "text/plain"), MQTT_OK);
    CHECK_RC(mqtt_properties_add_string(p, MQTT_PROP_RESPONSE_TOPIC, "reply/to/me"), MQTT_OK);
    CHECK_RC(mqtt_properties_add_string(p, MQTT_PROP_REASON_STRING, ""), MQTT_OK);
    CHECK_RC(mqtt_properties_add_binary(p, MQTT_PROP_CORRELATION_DATA, blob, sizeof blob),
             MQTT_OK);
    CHECK_RC(mqtt_properties_add_int(p, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, 3600), MQTT_OK);
    CHECK_RC(mqtt_properties_add_int(p, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 5), MQTT_OK);
    CHECK_RC(mqtt_properties_add_int(p, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 200000), MQTT_OK);
    CHECK_RC(mqtt_properties_add_int(p, MQTT_PROP_RECEIVE_MAXIMUM, 20), MQTT_OK);
    CHECK_RC(mqtt_properties_add_int(p, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, 1), MQTT_OK);

    /* present, but another one absent: still NOT_FOUND and untouched */
    CHECK_RC(mqtt_properties_get_int(p, MQTT_PROP_SESSION_EXPIRY_INTERVAL, &v),
             MQTT_ERR_NOT_FOUND);
    CHECK_RC(mqtt_properties_get_string(p, MQTT_PROP_SERVER_REFERENCE, &s, &len),
             MQTT_ERR_NOT_FOUND);
    CHECK_RC(mqtt_properties_get_binary(p, MQTT_PROP_AUTHENTICATION_DATA, &d, &len),
             MQTT_ERR_NOT_FOUND);
    CHECK_RC(mqtt_properties_get_int_at(p, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 2, &v),
             MQTT_ERR_NOT_FOUND);
    CHECK_RC(mqtt_properties_get_user_at(p, 0, &s, &len, &s, &len), MQTT_ERR_NOT_FOUND);
    CHECK(v == 0xDEADBEEFu);
    CHECK(s == sentinel);
    CHECK(d == (const uint8_t *)sentinel);
    CHECK_EQ(len, 12345);

    /* wrong type or unknown id: INVALID_PROPERTY */
    CHECK_RC(mqtt_properties_get_int(p, MQTT_PROP_CONTENT_TYPE, &v), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_properties_get_int(p, 4, &v), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_properties_get_int(p, 1000, &v), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_properties_get_int_at(p, MQTT_PROP_USER_PROPERTY, 0, &v),
             MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_properties_get_string(p, MQTT_PROP_CORRELATION_DATA, &s, &len),
             MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_properties_get_string(p, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, &s, &len),
             MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_properties_get_string(p, MQTT_PROP_USER_PROPERTY, &s, &len),
             MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_properties_get_binary(p, MQTT_PROP_CONTENT_TYPE, &d, &len),
             MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_properties_get_binary(p, -1, &d, &len), MQTT_ERR_INVALID_PROPERTY);
    CHECK(v == 0xDEADBEEFu);
    CHECK(s == sentinel);
    CHECK_EQ(len, 12345);
    CHECK_EQ(mqtt_properties_count(p, 4), 0);
    CHECK_EQ(mqtt_properties_count(p, -1), 0);
    CHECK_EQ(mqtt_properties_count(p, 0x100 + MQTT_PROP_CONTENT_TYPE), 0);

    /* strings: pointer + length into the list, not NUL-terminated */
    CHECK_RC(mqtt_properties_get_string(p, MQTT_PROP_CONTENT_TYPE, &s, &len), MQTT_OK);
    CHECK_EQ(len, 10);
    CHECK(memcmp(s, "text/plain", 10) == 0);
    /* the byte after it belongs to the next property, not a terminator */
    CHECK(s[len] != '\0');
    CHECK(string_is(p, MQTT_PROP_RESPONSE_TOPIC, "reply/to/me"));
    CHECK_RC(mqtt_properties_get_string(p, MQTT_PROP_REASON_STRING, &s, &len), MQTT_OK);
    CHECK_EQ(len, 0);
    /* binary with zero bytes in it */
    CHECK_RC(mqtt_properties_get_binary(p, MQTT_PROP_CORRELATION_DATA, &d, &len), MQTT_OK);
    CHECK_EQ(len, sizeof blob);
    CHECK(memcmp(d, blob, sizeof blob) == 0);
    /* integers of each width; the first of a repeated one, and each by index */
    CHECK_RC(mqtt_properties_get_int(p, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, &v), MQTT_OK);
    CHECK_EQ(v, 3600);
    CHECK_RC(mqtt_properties_get_int(p, MQTT_PROP_RECEIVE_MAXIMUM, &v), MQTT_OK);
    CHECK_EQ(v, 20);
    CHECK_RC(mqtt_properties_get_int(p, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, &v), MQTT_OK);
    CHECK_EQ(v, 1);
    CHECK_RC(mqtt_properties_get_int(p, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, &v), MQTT_OK);
    CHECK_EQ(v, 5);
    CHECK_EQ(mqtt_properties_count(p, MQTT_PROP_SUBSCRIPTION_IDENTIFIER), 2);
    CHECK_RC(mqtt_properties_get_int_at(p, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 0, &v), MQTT_OK);
    CHECK_EQ(v, 5);
    CHECK_RC(mqtt_properties_get_int_at(p, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 1, &v), MQTT_OK);
    CHECK_EQ(v, 200000);
    CHECK_RC(mqtt_properties_get_int_at(p, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, 1, &v),
             MQTT_ERR_NOT_FOUND);
    CHECK_EQ(v, 200000);
    CHECK_RC(mqtt_properties_get_int_at(p, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, (size_t)-1, &v),
             MQTT_ERR_NOT_FOUND);
    CHECK_EQ(mqtt_properties_count(p, MQTT_PROP_CONTENT_TYPE), 1);
    CHECK_EQ(total(p), 9);
done:
    mqtt_properties_free(p);
    mqtt_properties_free(empty);
}

static void properties_user_order(void)
{
    mqtt_properties *p = mqtt_properties_new();
    const char *k = "sentinel", *v = "sentinel";
    size_t kl = 7, vl = 7;

    CHECK(p != NULL);
    CHECK_RC(mqtt_properties_add_user(p, "b", "1"), MQTT_OK);
    CHECK_RC(mqtt_properties_add_int(p, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, 9), MQTT_OK);
    CHECK_RC(mqtt_properties_add_user(p, "a", "2"), MQTT_OK);
    CHECK_RC(mqtt_properties_add_user(p, "b", "3"), MQTT_OK); /* same key again */
    CHECK_RC(mqtt_properties_add_user(p, "", ""), MQTT_OK);
    CHECK_RC(mqtt_properties_add_user(p, "h\xc3\xa9", "\xe2\x82\xac"), MQTT_OK);
    CHECK_EQ(mqtt_properties_count(p, MQTT_PROP_USER_PROPERTY), 5);
    CHECK(user_is(p, 0, "b", "1"));
    CHECK(user_is(p, 1, "a", "2"));
    CHECK(user_is(p, 2, "b", "3"));
    CHECK(user_is(p, 3, "", ""));
    CHECK(user_is(p, 4, "h\xc3\xa9", "\xe2\x82\xac"));
    CHECK_RC(mqtt_properties_get_user_at(p, 5, &k, &kl, &v, &vl), MQTT_ERR_NOT_FOUND);
    CHECK(strcmp(k, "sentinel") == 0 && strcmp(v, "sentinel") == 0);
    CHECK_EQ(kl, 7);
    CHECK_EQ(vl, 7);
    /* only the lengths */
    CHECK_RC(mqtt_properties_get_user_at(p, 4, NULL, &kl, NULL, &vl), MQTT_OK);
    CHECK_EQ(kl, 3);
    CHECK_EQ(vl, 3);
done:
    mqtt_properties_free(p);
}

static void properties_copy_and_clear(void)
{
    mqtt_properties *p = mqtt_properties_new();
    mqtt_properties *copy = NULL, *copy2 = NULL, *empty_copy = NULL;
    uint32_t v = 0;
    const uint8_t *d;
    size_t len;
    char *text = NULL;

    CHECK(p != NULL);
    /* a heap string the copy must not point into */
    text = malloc(16);
    CHECK(text != NULL);
    snprintf(text, 16, "%s", "application/x");
    CHECK_RC(mqtt_properties_add_string(p, MQTT_PROP_CONTENT_TYPE, text), MQTT_OK);
    free(text);
    text = NULL;
    CHECK_RC(mqtt_properties_add_binary(p, MQTT_PROP_CORRELATION_DATA, "c\0d", 3), MQTT_OK);
    CHECK_RC(mqtt_properties_add_int(p, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, 42), MQTT_OK);
    CHECK_RC(mqtt_properties_add_user(p, "k1", "v1"), MQTT_OK);
    CHECK_RC(mqtt_properties_add_user(p, "k2", "v2"), MQTT_OK);

    copy = mqtt_properties_copy(p);
    CHECK(copy != NULL);
    /* the copy is independent: changing the original does not change it... */
    CHECK_RC(mqtt_properties_add_user(p, "k3", "v3"), MQTT_OK);
    CHECK_EQ(mqtt_properties_count(copy, MQTT_PROP_USER_PROPERTY), 2);
    /* ...and it outlives the original (valgrind / ASan would see a dangling read) */
    mqtt_properties_free(p);
    p = NULL;
    CHECK_EQ(total(copy), 5);
    CHECK(string_is(copy, MQTT_PROP_CONTENT_TYPE, "application/x"));
    CHECK_RC(mqtt_properties_get_binary(copy, MQTT_PROP_CORRELATION_DATA, &d, &len), MQTT_OK);
    CHECK_EQ(len, 3);
    CHECK(memcmp(d, "c\0d", 3) == 0);
    CHECK_RC(mqtt_properties_get_int(copy, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, &v), MQTT_OK);
    CHECK_EQ(v, 42);
    CHECK(user_is(copy, 0, "k1", "v1"));
    CHECK(user_is(copy, 1, "k2", "v2"));
    /* a copy is the caller's own list: it can grow */
    CHECK_RC(mqtt_properties_add_user(copy, "k4", "v4"), MQTT_OK);
    CHECK(user_is(copy, 2, "k4", "v4"));

    /* a copy of a copy, then clear the first: the second keeps everything */
    copy2 = mqtt_properties_copy(copy);
    CHECK(copy2 != NULL);
    CHECK_RC(mqtt_properties_clear(copy), MQTT_OK);
    CHECK_EQ(total(copy), 0);
    CHECK_RC(mqtt_properties_get_int(copy, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, &v),
             MQTT_ERR_NOT_FOUND);
    CHECK_RC(mqtt_properties_get_user_at(copy, 0, NULL, NULL, NULL, NULL), MQTT_ERR_NOT_FOUND);
    CHECK_EQ(total(copy2), 6);
    CHECK(user_is(copy2, 2, "k4", "v4"));
    /* clear twice, then reuse */
    CHECK_RC(mqtt_properties_clear(copy), MQTT_OK);
    CHECK_RC(mqtt_properties_add_int(copy, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, 7), MQTT_OK);
    CHECK_RC(mqtt_properties_get_int(copy, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, &v), MQTT_OK);
    CHECK_EQ(v, 7);
    CHECK_EQ(total(copy), 1);

    /* an empty list copies to an empty list */
    CHECK_RC(mqtt_properties_clear(copy2), MQTT_OK);
    empty_copy = mqtt_properties_copy(copy2);
    CHECK(empty_copy != NULL);
    CHECK_EQ(total(empty_copy), 0);
done:
    free(text);
    mqtt_properties_free(p);
    mqtt_properties_free(copy);
    mqtt_properties_free(copy2);
    mqtt_properties_free(empty_copy);
}

/* ---- protocol choice ---------------------------------------------------------------------- */

static void set_protocol_arguments(void)
{
    mqtt_client *c = t_client("proto", true);
    mqtt_properties *props = one_user("k", "v");
    int mid;

    CHECK(c != NULL && props != NULL);
    CHECK_EQ(MQTT_PROTOCOL_V311, 4);
    CHECK_EQ(MQTT_PROTOCOL_V5, 5);
    CHECK_RC(mqtt_client_set_protocol(NULL, MQTT_PROTOCOL_V5), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_protocol(NULL, 3), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_protocol(c, 3), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_protocol(c, 6), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_protocol(c, 0), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_protocol(c, -1), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_protocol(c, 5 + 256), MQTT_ERR_INVALID_ARGUMENT);
    /* still 3.1.1: properties are refused */
    CHECK_RC(mqtt_client_set_connect_properties(c, props), MQTT_ERR_PROTOCOL_VERSION);
    CHECK_RC(mqtt_client_set_protocol(c, MQTT_PROTOCOL_V5), MQTT_OK);
    CHECK_RC(mqtt_client_set_protocol(c, MQTT_PROTOCOL_V5), MQTT_OK); /* again: no change */
    CHECK_RC(mqtt_client_set_protocol(c, 3), MQTT_ERR_INVALID_ARGUMENT);
    /* still 5 after the refusal */
    CHECK_RC(mqtt_client_set_connect_properties(c, props), MQTT_OK);
    CHECK_RC(mqtt_client_set_protocol(c, MQTT_PROTOCOL_V311), MQTT_OK);
    CHECK_RC(mqtt_client_set_topic_alias_max(c, 3), MQTT_ERR_PROTOCOL_VERSION);
    /* a message made under 3.1.1 and still queued pins the version */
    CHECK_OK(mid, mqtt_client_publish(c, "a/b", "x", 1, 1, false));
    CHECK_RC(mqtt_client_set_protocol(c, MQTT_PROTOCOL_V5), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_topic_alias_max(c, 3), MQTT_ERR_PROTOCOL_VERSION);
    CHECK_RC(mqtt_client_set_protocol(c, MQTT_PROTOCOL_V311), MQTT_OK);
done:
    mqtt_client_free(c);
    mqtt_properties_free(props);
}

/* set_protocol while connected: ALREADY_CONNECTED, the connection and version unchanged. */
static void set_protocol_while_connected(void)
{
    mqtt_client *c = v5_client("proto-conn", true);
    mqtt_client *c3 = t_client("proto-conn3", true);
    mqtt_properties *props = one_user("k", "v");
    char topic[128];
    int mid;

    t_topic(topic, sizeof topic, "x");
    CHECK(c != NULL && c3 != NULL && props != NULL);
    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK_RC(mqtt_client_set_protocol(c, MQTT_PROTOCOL_V311), MQTT_ERR_ALREADY_CONNECTED);
    CHECK(mqtt_client_is_connected(c));
    CHECK_OK(mid, mqtt_client_publish_v5(c, topic, "x", 1, 0, false, props)); /* still v5 */
    CHECK_RC(t_connect(c3), MQTT_OK);
    CHECK_RC(mqtt_client_set_protocol(c3, MQTT_PROTOCOL_V5), MQTT_ERR_ALREADY_CONNECTED);
    CHECK_RC(mqtt_client_publish_v5(c3, topic, "x", 1, 0, false, props),
             MQTT_ERR_PROTOCOL_VERSION); /* still 3.1.1 */
    CHECK(mqtt_client_is_connected(c3));
    CHECK_RC(mqtt_client_disconnect(c), MQTT_OK);
    CHECK_RC(mqtt_client_disconnect(c3), MQTT_OK);
    /* once disconnected it may change */
    CHECK_RC(mqtt_client_set_protocol(c, MQTT_PROTOCOL_V311), MQTT_OK);
    CHECK_RC(mqtt_client_set_protocol(c3, MQTT_PROTOCOL_V5), MQTT_OK);
done:
    mqtt_client_free(c);
    mqtt_client_free(c3);
    mqtt_properties_free(props);
}

/* ---- NULL client for every client function -------------------------------------------------- */

static void null_client(void)
{
    mqtt_subscription_v5 sub = {"a/b", 1, false, false, 0};
    const char *topics[] = {"a/b"};
    mqtt_properties *props = mqtt_properties_new();

    CHECK(props != NULL);
    CHECK_RC(mqtt_client_set_connect_properties(NULL, props), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_connect_properties(NULL, NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_will_properties(NULL, props), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_will_properties(NULL, NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_topic_alias_max(NULL, 0), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_topic_alias_max(NULL, 10), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_publish_v5(NULL, "a/b", "x", 1, 1, false, NULL),
             MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_publish_v5(NULL, NULL, NULL, 5, 9, false, props),
             MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_subscribe_v5(NULL, &sub, 1, NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_subscribe_v5(NULL, NULL, 0, props), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_unsubscribe_v5(NULL, topics, 1, NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_unsubscribe_v5(NULL, NULL, 0, props), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_disconnect_v5(NULL, 0, NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_disconnect_v5(NULL, 0x05, props), MQTT_ERR_INVALID_ARGUMENT);
done:
    mqtt_properties_free(props);
}

/* ---- v5 calls on a 3.1.1 client ------------------------------------------------------------ */

static void v5_calls_on_311_client_offline(void)
{
    mqtt_client *c = t_client("v311", true);
    mqtt_properties *props = one_user("k", "v");
    mqtt_properties *empty = mqtt_properties_new();
    mqtt_properties *sid = one_int(MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 1);
    mqtt_subscription_v5 sub = {"a/b", 1, false, false, 0};
    const char *topics[] = {"a/b"};
    int mid, next;

    CHECK(c != NULL && props != NULL && empty != NULL && sid != NULL);
    /* properties or options: PROTOCOL_VERSION */
    CHECK_RC(mqtt_client_set_connect_properties(c, props), MQTT_ERR_PROTOCOL_VERSION);
    CHECK_RC(mqtt_client_set_will_properties(c, props), MQTT_ERR_PROTOCOL_VERSION);
    CHECK_RC(mqtt_client_set_topic_alias_max(c, 1), MQTT_ERR_PROTOCOL_VERSION);
    CHECK_RC(mqtt_client_publish_v5(c, "a/b", "x", 1, 1, false, props),
             MQTT_ERR_PROTOCOL_VERSION);
    CHECK_RC(mqtt_client_subscribe_v5(c, &sub, 1, props), MQTT_ERR_PROTOCOL_VERSION);
    CHECK_RC(mqtt_client_subscribe_v5(c, &sub, 1, sid), MQTT_ERR_PROTOCOL_VERSION);
    sub.no_local = true;
    CHECK_RC(mqtt_client_subscribe_v5(c, &sub, 1, NULL), MQTT_ERR_PROTOCOL_VERSION);
    sub.no_local = false;
    sub.retain_as_published = true;
    CHECK_RC(mqtt_client_subscribe_v5(c, &sub, 1, NULL), MQTT_ERR_PROTOCOL_VERSION);
    sub.retain_as_published = false;
    sub.retain_handling = 1;
    CHECK_RC(mqtt_client_subscribe_v5(c, &sub, 1, NULL), MQTT_ERR_PROTOCOL_VERSION);
    sub.retain_handling = 2;
    CHECK_RC(mqtt_client_subscribe_v5(c, &sub, 1, NULL), MQTT_ERR_PROTOCOL_VERSION);
    sub.retain_handling = 0;
    CHECK_RC(mqtt_client_unsubscribe_v5(c, topics, 1, props), MQTT_ERR_PROTOCOL_VERSION);
    CHECK_RC(mqtt_client_disconnect_v5(c, 0x04, NULL), MQTT_ERR_PROTOCOL_VERSION);
    CHECK_RC(mqtt_client_disconnect_v5(c, 0, props), MQTT_ERR_PROTOCOL_VERSION);
    /* nothing of that was queued: the version can still change */
    CHECK_RC(mqtt_client_set_protocol(c, MQTT_PROTOCOL_V5), MQTT_OK);
    CHECK_RC(mqtt_client_set_protocol(c, MQTT_PROTOCOL_V311), MQTT_OK);

    /* NULL / empty properties and default options: as the 3.1.1 calls */
    CHECK_RC(mqtt_client_set_connect_properties(c, NULL), MQTT_OK);
    CHECK_RC(mqtt_client_set_connect_properties(c, empty), MQTT_OK);
    CHECK_RC(mqtt_client_set_will_properties(c, NULL), MQTT_OK);
    CHECK_RC(mqtt_client_set_will_properties(c, empty), MQTT_OK);
    CHECK_RC(mqtt_client_set_topic_alias_max(c, 0), MQTT_OK);
    CHECK_RC(mqtt_client_disconnect_v5(c, 0, NULL), MQTT_ERR_NOT_CONNECTED);
    CHECK_RC(mqtt_client_disconnect_v5(c, 0, empty), MQTT_ERR_NOT_CONNECTED);
    CHECK_OK(mid, mqtt_client_publish_v5(c, "a/b", "x", 1, 1, false, NULL));
    CHECK(mid > 0);
    /* the failures in between consumed no message id */
    CHECK_RC(mqtt_client_publish_v5(c, "a/b", "x", 1, 1, false, props),
             MQTT_ERR_PROTOCOL_VERSION);
    CHECK_RC(mqtt_client_subscribe_v5(c, &sub, 1, props), MQTT_ERR_PROTOCOL_VERSION);
    CHECK_OK(next, mqtt_client_publish_v5(c, "a/b", "x", 1, 2, false, empty));
    CHECK_EQ(next, mid + 1);
    CHECK_OK(next, mqtt_client_subscribe_v5(c, &sub, 1, NULL));
    CHECK_EQ(next, mid + 2);
    CHECK_OK(next, mqtt_client_unsubscribe_v5(c, topics, 1, empty));
    CHECK_EQ(next, mid + 3);
    /* QoS 0 offline: NOT_CONNECTED, as mqtt_client_publish */
    CHECK_RC(mqtt_client_publish_v5(c, "a/b", "x", 1, 0, false, NULL), MQTT_ERR_NOT_CONNECTED);
    /* the usual argument errors come first */
    CHECK_RC(mqtt_client_publish_v5(c, "a/+", "x", 1, 1, false, NULL), MQTT_ERR_INVALID_TOPIC);
    CHECK_RC(mqtt_client_publish_v5(c, "a/b", "x", 1, 3, false, NULL), MQTT_ERR_INVALID_QOS);
done:
    mqtt_client_free(c);
    mqtt_properties_free(props);
    mqtt_properties_free(empty);
    mqtt_properties_free(sid);
}

/* A 3.1.1 client connected to the broker: the v5 calls with NULL properties and default
 * options subscribe, publish, unsubscribe and disconnect as the 3.1.1 calls; callbacks see
 * no properties. */
struct v311_seen {
    int subacks, unsubacks, pubacks, messages, disconnects, connacks;
    size_t granted_len;
    int granted0;
    int message_props_null, data_props_null, connack_props_null;
    char payload[32];
    int disconnect_error;
};

static struct v311_seen v311;

static void v311_cb(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)user_data;
    pthread_mutex_lock(&t_lock);
    switch (data->command) {
    case MQTT_CONNACK:
        v311.connacks++;
        v311.connack_props_null = data->properties == NULL;
        break;
    case MQTT_SUBACK:
        v311.subacks++;
        v311.granted_len = data->granted_qos_len;
        v311.granted0 = data->granted_qos_len > 0 ? data->granted_qos[0] : -1;
        break;
    case MQTT_UNSUBACK:
        v311.unsubacks++;
        break;
    case MQTT_PUBACK:
        v311.pubacks++;
        v311.data_props_null = data->properties == NULL;
        break;
    case MQTT_PUBLISH:
        if (data->message != NULL) {
            size_t n = data->message->payload_len < sizeof v311.payload - 1
                           ? data->message->payload_len
                           : sizeof v311.payload - 1;
            memcpy(v311.payload, data->message->payload, n);
            v311.payload[n] = '\0';
            v311.message_props_null = data->message->properties == NULL;
            v311.messages++;
        }
        break;
    case MQTT_DISCONNECT:
        v311.disconnects++;
        v311.disconnect_error = data->error;
        break;
    default:
        break;
    }
    t_signal_locked();
    pthread_mutex_unlock(&t_lock);
}

static void v5_calls_on_311_client_online(void)
{
    mqtt_client *c = t_client("v311-online", true);
    mqtt_subscription_v5 sub;
    const char *topics[1];
    char topic[128];
    int mid;
    static const int commands[] = {MQTT_CONNACK, MQTT_SUBACK,  MQTT_UNSUBACK,
                                   MQTT_PUBACK,  MQTT_PUBLISH, MQTT_DISCONNECT};
    size_t i;

    memset(&v311, 0, sizeof v311);
    t_topic(topic, sizeof topic, "t");
    CHECK(c != NULL);
    for (i = 0; i < sizeof commands / sizeof commands[0]; i++)
        CHECK_RC(mqtt_client_on(c, commands[i], v311_cb, NULL, 0, NULL), MQTT_OK);
    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK_RC(mqtt_client_loop_start(c, NULL, NULL), MQTT_OK);
    CHECK_EQ(t_get(&v311.connacks), 1);

    sub.topic = topic;
    sub.qos = 1;
    sub.no_local = false;
    sub.retain_as_published = false;
    sub.retain_handling = 0;
    CHECK_OK(mid, mqtt_client_subscribe_v5(c, &sub, 1, NULL));
    CHECK(t_wait(&v311.subacks, 1, 5000));
    CHECK_OK(mid, mqtt_client_publish_v5(c, topic, "plain", 5, 1, false, NULL));
    CHECK(t_wait(&v311.messages, 1, 5000));
    CHECK(t_wait(&v311.pubacks, 1, 5000));
    topics[0] = topic;
    CHECK_OK(mid, mqtt_client_unsubscribe_v5(c, topics, 1, NULL));
    CHECK(t_wait(&v311.unsubacks, 1, 5000));
    CHECK_RC(mqtt_client_disconnect_v5(c, 0, NULL), MQTT_OK);
    CHECK(t_wait(&v311.disconnects, 1, 5000));
    pthread_mutex_lock(&t_lock);
    {
        struct v311_seen seen = v311;
        pthread_mutex_unlock(&t_lock);
        CHECK_EQ(seen.granted_len, 1);
        CHECK_EQ(seen.granted0, 1);
        CHECK(strcmp(seen.payload, "plain") == 0);
        CHECK(seen.message_props_null);
        CHECK(seen.data_props_null);
        CHECK(seen.connack_props_null);
        CHECK_EQ(seen.disconnect_error, MQTT_OK);
    }
done:
    mqtt_client_free(c);
}

/* ---- publish_v5 / subscribe_v5 / unsubscribe_v5 argument errors on a v5 client -------------- */

struct bad_list {
    mqtt_properties *p;
    const char *why;
};

static void publish_v5_invalid_properties(void)
{
    mqtt_client *c = v5_client("pub5", true);
    struct bad_list bad[16];
    size_t n = 0, i;
    mqtt_properties *good = mqtt_properties_new();
    int first, mid;
    char topic[128];

    t_topic(topic, sizeof topic, "p");
    memset(bad, 0, sizeof bad);
    CHECK(c != NULL && good != NULL);
#define BAD(list, reason)                                                                          \
    do {                                                                                           \
        bad[n].p = (list);                                                                         \
        bad[n].why = (reason);                                                                     \
        CHECK(bad[n].p != NULL);                                                                   \
        n++;                                                                                       \
    } while (0)
    BAD(one_int(MQTT_PROP_SESSION_EXPIRY_INTERVAL, 10), "Session Expiry Interval");
    BAD(one_int(MQTT_PROP_TOPIC_ALIAS, 1), "Topic Alias");
    BAD(one_int(MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 1), "Subscription Identifier");
    BAD(one_int(MQTT_PROP_RECEIVE_MAXIMUM, 10), "Receive Maximum");
    BAD(one_int(MQTT_PROP_WILL_DELAY_INTERVAL, 10), "Will Delay Interval");
    BAD(one_int(MQTT_PROP_REQUEST_PROBLEM_INFORMATION, 1), "Request Problem Information");
    BAD(one_int(MQTT_PROP_MAXIMUM_QOS, 1), "Maximum QoS");
    BAD(one_string(MQTT_PROP_REASON_STRING, "why"), "Reason String");
    BAD(one_string(MQTT_PROP_AUTHENTICATION_METHOD, "SCRAM"), "Authentication Method");
    BAD(one_string(MQTT_PROP_ASSIGNED_CLIENT_IDENTIFIER, "id"), "Assigned Client Identifier");
    /* duplicates of single-valued properties */
    BAD(one_string(MQTT_PROP_CONTENT_TYPE, "a"), "Content Type twice");
    CHECK_RC(mqtt_properties_add_string(bad[n - 1].p, MQTT_PROP_CONTENT_TYPE, "b"), MQTT_OK);
    BAD(one_int(MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, 1), "Message Expiry Interval twice");
    CHECK_RC(mqtt_properties_add_int(bad[n - 1].p, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, 1),
             MQTT_OK);
    BAD(one_int(MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, 0), "Payload Format Indicator twice");
    CHECK_RC(mqtt_properties_add_int(bad[n - 1].p, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, 1),
             MQTT_OK);
    /* a good property followed by a bad one */
    BAD(one_user("k", "v"), "User Property then Topic Alias");
    CHECK_RC(mqtt_properties_add_int(bad[n - 1].p, MQTT_PROP_TOPIC_ALIAS, 3), MQTT_OK);
#undef BAD

    /* the good list: every PUBLISH property the application may send, users repeated */
    CHECK_RC(mqtt_properties_add_int(good, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, 1), MQTT_OK);
    CHECK_RC(mqtt_properties_add_int(good, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, 60), MQTT_OK);
    CHECK_RC(mqtt_properties_add_string(good, MQTT_PROP_CONTENT_TYPE, "text/plain"), MQTT_OK);
    CHECK_RC(mqtt_properties_add_string(good, MQTT_PROP_RESPONSE_TOPIC, "r/t"), MQTT_OK);
    CHECK_RC(mqtt_properties_add_binary(good, MQTT_PROP_CORRELATION_DATA, "id", 2), MQTT_OK);
    CHECK_RC(mqtt_properties_add_user(good, "k", "v1"), MQTT_OK);
    CHECK_RC(mqtt_properties_add_user(good, "k", "v2"), MQTT_OK);

    /* offline (QoS 1 is queued): every bad list is refused, nothing is queued */
    for (i = 0; i < n; i++) {
        int rc = mqtt_client_publish_v5(c, topic, "x", 1, 1, false, bad[i].p);
        if (rc != MQTT_ERR_INVALID_PROPERTY)
            t_failf(__LINE__, "publish_v5 with %s returned %d, expected INVALID_PROPERTY",
                    bad[i].why, rc);
    }
    CHECK(!t_case_failed);
    CHECK_RC(mqtt_client_set_protocol(c, MQTT_PROTOCOL_V311), MQTT_OK); /* nothing pending */
    CHECK_RC(mqtt_client_set_protocol(c, MQTT_PROTOCOL_V5), MQTT_OK);

    /* the other arguments, with good properties */
    CHECK_RC(mqtt_client_publish_v5(c, NULL, "x", 1, 1, false, good), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_publish_v5(c, topic, NULL, 1, 1, false, good),
             MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_publish_v5(c, "a/+", "x", 1, 1, false, good), MQTT_ERR_INVALID_TOPIC);
    /* an empty topic is invalid, as under 3.1.1 (only a Topic Alias could stand for it, and
     * the client assigns those itself) */
    CHECK_RC(mqtt_client_publish_v5(c, "", "x", 1, 1, false, good), MQTT_ERR_INVALID_TOPIC);
    CHECK_RC(mqtt_client_publish_v5(c, "", "x", 1, 0, false, NULL), MQTT_ERR_INVALID_TOPIC);
    CHECK_RC(mqtt_client_publish(c, "", "x", 1, 1, false), MQTT_ERR_INVALID_TOPIC);
    CHECK_RC(mqtt_client_publish_v5(c, "a/\xff", "x", 1, 1, false, good), MQTT_ERR_INVALID_UTF8);
    CHECK_RC(mqtt_client_publish_v5(c, topic, "x", 1, 3, false, good), MQTT_ERR_INVALID_QOS);
    CHECK_RC(mqtt_client_publish_v5(c, topic, "x", 1, -1, false, good), MQTT_ERR_INVALID_QOS);
    CHECK_RC(mqtt_client_publish_v5(c, topic, "x", 1, 0, false, good), MQTT_ERR_NOT_CONNECTED);

    /* online: the same refusals, the connection stays, failures consume no message id */
    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK_OK(first, mqtt_client_publish_v5(c, topic, "x", 1, 1, false, good));
    for (i = 0; i < n; i++) {
        int rc = mqtt_client_publish_v5(c, topic, "x", 1, (int)(i % 3), false, bad[i].p);
        if (rc != MQTT_ERR_INVALID_PROPERTY)
            t_failf(__LINE__, "online publish_v5 with %s returned %d, expected INVALID_PROPERTY",
                    bad[i].why, rc);
    }
    CHECK(!t_case_failed);
    CHECK_OK(mid, mqtt_client_publish_v5(c, topic, "x", 1, 2, false, good));
    CHECK_EQ(mid, first + 1);
    CHECK_OK(mid, mqtt_client_publish_v5(c, topic, "x", 1, 0, false, good)); /* QoS 0 too */
    CHECK(mqtt_client_is_connected(c));
    CHECK_RC(mqtt_client_disconnect(c), MQTT_OK);
done:
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
        mqtt_properties_free(bad[i].p);
    mqtt_properties_free(good);
    mqtt_client_free(c);
}

static void subscribe_v5_invalid_arguments(void)
{
    mqtt_client *c = v5_client("sub5", true);
    mqtt_subscription_v5 sub = {"a/b", 1, false, false, 0};
    mqtt_subscription_v5 two[2] = {{"ok/1", 1, false, false, 0}, {"ok/2", 1, false, false, 0}};
    mqtt_properties *sid = one_int(MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 9);
    mqtt_properties *sid_twice = one_int(MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 9);
    mqtt_properties *content = one_string(MQTT_PROP_CONTENT_TYPE, "x");
    mqtt_properties *expiry = one_int(MQTT_PROP_SESSION_EXPIRY_INTERVAL, 1);
    mqtt_properties *user = one_user("k", "v");
    int first, mid;

    CHECK(c != NULL && sid != NULL && sid_twice != NULL && content != NULL && expiry != NULL &&
          user != NULL);
    CHECK_RC(mqtt_properties_add_int(sid_twice, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 10), MQTT_OK);

    CHECK_RC(mqtt_client_subscribe_v5(c, NULL, 1, NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_subscribe_v5(c, &sub, 0, NULL), MQTT_ERR_INVALID_ARGUMENT);
    sub.topic = NULL;
    CHECK_RC(mqtt_client_subscribe_v5(c, &sub, 1, NULL), MQTT_ERR_INVALID_ARGUMENT);
    sub.topic = "a/b";
    sub.retain_handling = 3;
    CHECK_RC(mqtt_client_subscribe_v5(c, &sub, 1, NULL), MQTT_ERR_INVALID_ARGUMENT);
    sub.retain_handling = -1;
    CHECK_RC(mqtt_client_subscribe_v5(c, &sub, 1, NULL), MQTT_ERR_INVALID_ARGUMENT);
    sub.retain_handling = 256;
    CHECK_RC(mqtt_client_subscribe_v5(c, &sub, 1, NULL), MQTT_ERR_INVALID_ARGUMENT);
    sub.retain_handling = 0;
    sub.topic = "$share/g/t";
    sub.no_local = true;
    CHECK_RC(mqtt_client_subscribe_v5(c, &sub, 1, NULL), MQTT_ERR_INVALID_ARGUMENT);
    sub.no_local = false;
    sub.topic = "a/#/b";
    CHECK_RC(mqtt_client_subscribe_v5(c, &sub, 1, NULL), MQTT_ERR_INVALID_TOPIC);
    sub.topic = "";
    CHECK_RC(mqtt_client_subscribe_v5(c, &sub, 1, NULL), MQTT_ERR_INVALID_TOPIC);
    sub.topic = "a/\xff";
    CHECK_RC(mqtt_client_subscribe_v5(c, &sub, 1, NULL), MQTT_ERR_INVALID_UTF8);
    sub.topic = "a/b";
    sub.qos = 3;
    CHECK_RC(mqtt_client_subscribe_v5(c, &sub, 1, NULL), MQTT_ERR_INVALID_QOS);
    sub.qos = -1;
    CHECK_RC(mqtt_client_subscribe_v5(c, &sub, 1, NULL), MQTT_ERR_INVALID_QOS);
    sub.qos = 1;
    CHECK_RC(mqtt_client_subscribe_v5(c, &sub, 1, sid_twice), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_client_subscribe_v5(c, &sub, 1, content), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_client_subscribe_v5(c, &sub, 1, expiry), MQTT_ERR_INVALID_PROPERTY);
    /* one bad entry fails the whole request */
    two[1].retain_handling = 3;
    CHECK_RC(mqtt_client_subscribe_v5(c, two, 2, NULL), MQTT_ERR_INVALID_ARGUMENT);
    two[1].retain_handling = 0;
    two[1].topic = "$share/g/ok";
    two[1].no_local = true;
    CHECK_RC(mqtt_client_subscribe_v5(c, two, 2, NULL), MQTT_ERR_INVALID_ARGUMENT);
    two[1].no_local = false;
    two[1].topic = "x/#/y";
    CHECK_RC(mqtt_client_subscribe_v5(c, two, 2, NULL), MQTT_ERR_INVALID_TOPIC);
    two[1].topic = "ok/2";

    /* unsubscribe_v5 */
    {
        const char *topics[2] = {"ok/1", NULL};
        CHECK_RC(mqtt_client_unsubscribe_v5(c, NULL, 1, NULL), MQTT_ERR_INVALID_ARGUMENT);
        CHECK_RC(mqtt_client_unsubscribe_v5(c, topics, 0, NULL), MQTT_ERR_INVALID_ARGUMENT);
        CHECK_RC(mqtt_client_unsubscribe_v5(c, topics, 2, NULL), MQTT_ERR_INVALID_ARGUMENT);
        topics[1] = "a/#/b";
        CHECK_RC(mqtt_client_unsubscribe_v5(c, topics, 2, NULL), MQTT_ERR_INVALID_TOPIC);
        topics[1] = "a/\xff";
        CHECK_RC(mqtt_client_unsubscribe_v5(c, topics, 2, NULL), MQTT_ERR_INVALID_UTF8);
        topics[1] = "ok/2";
        CHECK_RC(mqtt_client_unsubscribe_v5(c, topics, 2, sid), MQTT_ERR_INVALID_PROPERTY);
        CHECK_RC(mqtt_client_unsubscribe_v5(c, topics, 2, content), MQTT_ERR_INVALID_PROPERTY);
    }
    /* nothing was queued by any of that */
    CHECK_RC(mqtt_client_set_protocol(c, MQTT_PROTOCOL_V311), MQTT_OK);
    CHECK_RC(mqtt_client_set_protocol(c, MQTT_PROTOCOL_V5), MQTT_OK);

    /* valid: options, a shared subscription without no_local, identifier + user property */
    two[0].no_local = true;
    two[0].retain_as_published = true;
    two[0].retain_handling = 2;
    two[1].topic = "$share/g/ok/2";
    two[1].qos = 2;
    CHECK_OK(first, mqtt_client_subscribe_v5(c, two, 2, sid));
    CHECK_RC(mqtt_client_subscribe_v5(c, &sub, 1, sid_twice), MQTT_ERR_INVALID_PROPERTY);
    CHECK_OK(mid, mqtt_client_subscribe_v5(c, &sub, 1, user));
    CHECK_EQ(mid, first + 1);
    {
        const char *topics[2] = {"ok/1", "$share/g/ok/2"};
        CHECK_RC(mqtt_client_unsubscribe_v5(c, topics, 2, sid), MQTT_ERR_INVALID_PROPERTY);
        CHECK_OK(mid, mqtt_client_unsubscribe_v5(c, topics, 2, user));
        CHECK_EQ(mid, first + 2);
    }
    /* queued requests pin the version */
    CHECK_RC(mqtt_client_set_protocol(c, MQTT_PROTOCOL_V311), MQTT_ERR_INVALID_ARGUMENT);
done:
    mqtt_client_free(c);
    mqtt_properties_free(sid);
    mqtt_properties_free(sid_twice);
    mqtt_properties_free(content);
    mqtt_properties_free(expiry);
    mqtt_properties_free(user);
}

/* ---- connect / will properties -------------------------------------------------------------- */

static void connect_and_will_properties_invalid(void)
{
    mqtt_client *c = v5_client("connprops", true);
    mqtt_properties *auth_method = one_string(MQTT_PROP_AUTHENTICATION_METHOD, "SCRAM-SHA-1");
    mqtt_properties *auth_data = mqtt_properties_new();
    mqtt_properties *content = one_string(MQTT_PROP_CONTENT_TYPE, "x");
    mqtt_properties *alias = one_int(MQTT_PROP_TOPIC_ALIAS, 1);
    mqtt_properties *sei_twice = one_int(MQTT_PROP_SESSION_EXPIRY_INTERVAL, 60);
    mqtt_properties *sei60 = one_int(MQTT_PROP_SESSION_EXPIRY_INTERVAL, 60);
    mqtt_properties *sei10 = one_int(MQTT_PROP_SESSION_EXPIRY_INTERVAL, 10);
    mqtt_properties *delay_twice = one_int(MQTT_PROP_WILL_DELAY_INTERVAL, 1);
    mqtt_properties *sid = one_int(MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 1);
    mqtt_properties *will_ok = one_int(MQTT_PROP_WILL_DELAY_INTERVAL, 0);
    mqtt_properties *empty = mqtt_properties_new();

    CHECK(c != NULL && auth_method != NULL && auth_data != NULL && content != NULL &&
          alias != NULL && sei_twice != NULL && sei60 != NULL && sei10 != NULL &&
          delay_twice != NULL && sid != NULL && will_ok != NULL && empty != NULL);
    CHECK_RC(mqtt_properties_add_binary(auth_data, MQTT_PROP_AUTHENTICATION_DATA, "x", 1),
             MQTT_OK);
    CHECK_RC(mqtt_properties_add_int(sei_twice, MQTT_PROP_SESSION_EXPIRY_INTERVAL, 60), MQTT_OK);
    CHECK_RC(mqtt_properties_add_int(delay_twice, MQTT_PROP_WILL_DELAY_INTERVAL, 2), MQTT_OK);

    /* enhanced authentication: a method is a CONNECT property (see MQTT_AUTH); data
     * without a method is not */
    CHECK_RC(mqtt_client_set_connect_properties(c, auth_method), MQTT_OK);
    /* a CONNECT with Session Expiry Interval 60 in force */
    CHECK_RC(mqtt_client_set_connect_properties(c, sei60), MQTT_OK);
    CHECK_RC(mqtt_client_set_connect_properties(c, auth_data), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_client_set_connect_properties(c, content), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_client_set_connect_properties(c, alias), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_client_set_connect_properties(c, sid), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_client_set_connect_properties(c, sei_twice), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_client_set_connect_properties(c, delay_twice), MQTT_ERR_INVALID_PROPERTY);
    /* unchanged: a DISCONNECT may still raise the expiry from the CONNECT's 60 (the call
     * passes its argument checks and only then finds the client offline) */
    CHECK_RC(mqtt_client_disconnect_v5(c, 0, sei10), MQTT_ERR_NOT_CONNECTED);
    /* cleared: the CONNECT's expiry is 0 again, which a DISCONNECT may not raise */
    CHECK_RC(mqtt_client_set_connect_properties(c, empty), MQTT_OK);
    CHECK_RC(mqtt_client_disconnect_v5(c, 0, sei10), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_client_set_connect_properties(c, sei60), MQTT_OK);
    CHECK_RC(mqtt_client_set_connect_properties(c, NULL), MQTT_OK);
    CHECK_RC(mqtt_client_disconnect_v5(c, 0, sei10), MQTT_ERR_INVALID_PROPERTY);

    /* will properties */
    CHECK_RC(mqtt_client_set_will_properties(c, sei60), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_client_set_will_properties(c, delay_twice), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_client_set_will_properties(c, sid), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_client_set_will_properties(c, alias), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_client_set_will_properties(c, auth_method), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_client_set_will_properties(c, will_ok), MQTT_OK);
    CHECK_RC(mqtt_client_set_will_properties(c, content), MQTT_OK);
    CHECK_RC(mqtt_client_set_will_properties(c, NULL), MQTT_OK);

    /* topic alias maximum: any value on a v5 client */
    CHECK_RC(mqtt_client_set_topic_alias_max(c, 65535), MQTT_OK);
    CHECK_RC(mqtt_client_set_topic_alias_max(c, 0), MQTT_OK);
done:
    mqtt_client_free(c);
    mqtt_properties_free(auth_method);
    mqtt_properties_free(auth_data);
    mqtt_properties_free(content);
    mqtt_properties_free(alias);
    mqtt_properties_free(sei_twice);
    mqtt_properties_free(sei60);
    mqtt_properties_free(sei10);
    mqtt_properties_free(delay_twice);
    mqtt_properties_free(sid);
    mqtt_properties_free(will_ok);
    mqtt_properties_free(empty);
}

/* ---- disconnect_v5 -------------------------------------------------------------------------- */

static int dv5_disconnects, dv5_error;

static void dv5_on_disconnect(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)user_data;
    pthread_mutex_lock(&t_lock);
    dv5_error = data->error;
    dv5_disconnects++;
    t_signal_locked();
    pthread_mutex_unlock(&t_lock);
}

static int dv5_pubacks;

static void dv5_on_puback(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)data;
    (void)user_data;
    t_bump(&dv5_pubacks);
}

static void disconnect_v5_invalid(void)
{
    /* clean session, no Session Expiry Interval: the CONNECT's is 0 */
    mqtt_client *c = v5_client("disc5", true);
    mqtt_properties *sei10 = one_int(MQTT_PROP_SESSION_EXPIRY_INTERVAL, 10);
    mqtt_properties *sei0 = one_int(MQTT_PROP_SESSION_EXPIRY_INTERVAL, 0);
    mqtt_properties *content = one_string(MQTT_PROP_CONTENT_TYPE, "x");
    mqtt_properties *reason_twice = one_string(MQTT_PROP_REASON_STRING, "a");
    mqtt_properties *good = one_string(MQTT_PROP_REASON_STRING, "bye");
    static const int bad_codes[] = {0x01, 0x02, 0x05, 0x10, 0x7F, 0x84, 0x86, 0x88, 0xA3,
                                    0xFF, -1,   256,  0x104};
    char topic[128];
    size_t i;
    int mid;

    t_topic(topic, sizeof topic, "d");
    dv5_disconnects = 0;
    dv5_pubacks = 0;
    CHECK(c != NULL && sei10 != NULL && sei0 != NULL && content != NULL &&
          reason_twice != NULL && good != NULL);
    CHECK_RC(mqtt_properties_add_string(reason_twice, MQTT_PROP_REASON_STRING, "b"), MQTT_OK);
    CHECK_RC(mqtt_properties_add_user(good, "k", "v"), MQTT_OK);
    CHECK_RC(mqtt_properties_add_int(good, MQTT_PROP_SESSION_EXPIRY_INTERVAL, 0), MQTT_OK);
    CHECK_RC(mqtt_client_on(c, MQTT_DISCONNECT, dv5_on_disconnect, NULL, 0, NULL), MQTT_OK);
    CHECK_RC(mqtt_client_on(c, MQTT_PUBACK, dv5_on_puback, NULL, 0, NULL), MQTT_OK);

    /* offline: argument errors before NOT_CONNECTED */
    CHECK_RC(mqtt_client_disconnect_v5(c, 0x05, NULL), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_disconnect_v5(c, 0, sei10), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_client_disconnect_v5(c, 0, NULL), MQTT_ERR_NOT_CONNECTED);

    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK_RC(mqtt_client_loop_start(c, NULL, NULL), MQTT_OK);
    for (i = 0; i < sizeof bad_codes / sizeof bad_codes[0]; i++) {
        int rc = mqtt_client_disconnect_v5(c, bad_codes[i], NULL);
        if (rc != MQTT_ERR_INVALID_ARGUMENT)
            t_failf(__LINE__, "disconnect_v5 with reason 0x%x returned %d", bad_codes[i], rc);
    }
    CHECK(!t_case_failed);
    CHECK_RC(mqtt_client_disconnect_v5(c, 0, sei10), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_client_disconnect_v5(c, 0x04, sei10), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_client_disconnect_v5(c, 0, content), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_client_disconnect_v5(c, 0, reason_twice), MQTT_ERR_INVALID_PROPERTY);
    CHECK_RC(mqtt_client_disconnect_v5(c, 0x05, good), MQTT_ERR_INVALID_ARGUMENT);

    /* nothing happened: still connected, a QoS 1 round trip works, no DISCONNECT seen */
    CHECK(mqtt_client_is_connected(c));
    CHECK_OK(mid, mqtt_client_publish_v5(c, topic, "x", 1, 1, false, NULL));
    CHECK(t_wait(&dv5_pubacks, 1, 5000));
    CHECK(mqtt_client_is_connected(c));
    CHECK_EQ(t_get(&dv5_disconnects), 0);

    /* valid: Session Expiry 0 (the CONNECT's), a reason string and a user property */
    CHECK_RC(mqtt_client_disconnect_v5(c, 0x00, good), MQTT_OK);
    CHECK(t_wait(&dv5_disconnects, 1, 5000));
    CHECK_EQ(t_get(&dv5_error), MQTT_OK);
    CHECK(!mqtt_client_is_connected(c));
    CHECK_RC(mqtt_client_disconnect_v5(c, 0, sei0), MQTT_ERR_NOT_CONNECTED);
done:
    mqtt_client_free(c);
    mqtt_properties_free(sei10);
    mqtt_properties_free(sei0);
    mqtt_properties_free(content);
    mqtt_properties_free(reason_twice);
    mqtt_properties_free(good);
}

/* ---- end to end ------------------------------------------------------------------------------ */

#define E2E_MAX 8

struct e2e {
    int connacks, subacks, unsubacks, pubacks, messages, disconnects;
    /* SUBACK / UNSUBACK i: mid, reason codes, granted_qos */
    int suback_mid[E2E_MAX];
    size_t suback_len[E2E_MAX], suback_granted_len[E2E_MAX];
    uint8_t suback_codes[E2E_MAX][4];
    int unsuback_mid[E2E_MAX];
    size_t unsuback_len[E2E_MAX];
    uint8_t unsuback_codes[E2E_MAX][4];
    int puback_mid, puback_error, puback_reason;
    /* messages: topic, payload, qos and a copy of the properties */
    char topic[E2E_MAX][128];
    char payload[E2E_MAX][32];
    int qos[E2E_MAX];
    mqtt_properties *props[E2E_MAX];
    int props_null[E2E_MAX];
    /* the callback's own list: what modifying it returned, its count before and after */
    int ro_add_int, ro_add_string, ro_add_binary, ro_add_user, ro_clear;
    size_t ro_total_before, ro_total_after;
    int ro_checked;
};

static struct e2e rx;

static void e2e_reset(void)
{
    int i;
    pthread_mutex_lock(&t_lock);
    for (i = 0; i < E2E_MAX; i++)
        mqtt_properties_free(rx.props[i]);
    memset(&rx, 0, sizeof rx);
    pthread_mutex_unlock(&t_lock);
}

static void copy_codes(uint8_t *dst, size_t *dst_len, const uint8_t *src, size_t len)
{
    *dst_len = len;
    if (src != NULL)
        memcpy(dst, src, len < 4 ? len : 4);
}

static void e2e_cb(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)user_data;
    pthread_mutex_lock(&t_lock);
    switch (data->command) {
    case MQTT_CONNACK:
        rx.connacks++;
        break;
    case MQTT_SUBACK:
        if (rx.subacks < E2E_MAX) {
            rx.suback_mid[rx.subacks] = data->mid;
            rx.suback_granted_len[rx.subacks] = data->granted_qos_len;
            copy_codes(rx.suback_codes[rx.subacks], &rx.suback_len[rx.subacks],
                       data->reason_codes, data->reason_codes_len);
        }
        rx.subacks++;
        break;
    case MQTT_UNSUBACK:
        if (rx.unsubacks < E2E_MAX) {
            rx.unsuback_mid[rx.unsubacks] = data->mid;
            copy_codes(rx.unsuback_codes[rx.unsubacks], &rx.unsuback_len[rx.unsubacks],
                       data->reason_codes, data->reason_codes_len);
        }
        rx.unsubacks++;
        break;
    case MQTT_PUBACK:
        rx.pubacks++;
        rx.puback_mid = data->mid;
        rx.puback_error = data->error;
        rx.puback_reason = data->reason_code;
        break;
    case MQTT_PUBLISH:
    case MQTT_PUBREL: /* a QoS 2 message is delivered with its PUBREL */
        if (data->message != NULL) {
            const mqtt_message *m = data->message;
            int i = rx.messages;
            if (i < E2E_MAX) {
                size_t n = m->payload_len < sizeof rx.payload[i] - 1 ? m->payload_len
                                                                      : sizeof rx.payload[i] - 1;
                snprintf(rx.topic[i], sizeof rx.topic[i], "%s", m->topic);
                if (n > 0)
                    memcpy(rx.payload[i], m->payload, n);
                rx.payload[i][n] = '\0';
                rx.qos[i] = m->qos;
                rx.props_null[i] = m->properties == NULL;
                /* the way to keep a callback's list */
                rx.props[i] = mqtt_properties_copy(m->properties);
                if (m->properties != NULL && !rx.ro_checked) {
                    /* the library's list is read-only, even with the const cast away */
                    mqtt_properties *w = (mqtt_properties *)m->properties;
                    rx.ro_checked = 1;
                    rx.ro_total_before = total(m->properties);
                    rx.ro_add_int = mqtt_properties_add_int(
                        w, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, 5);
                    rx.ro_add_string =
                        mqtt_properties_add_string(w, MQTT_PROP_CONTENT_TYPE, "x");
                    rx.ro_add_binary =
                        mqtt_properties_add_binary(w, MQTT_PROP_CORRELATION_DATA, "x", 1);
                    rx.ro_add_user = mqtt_properties_add_user(w, "k", "v");
                    rx.ro_clear = mqtt_properties_clear(w);
                    rx.ro_total_after = total(m->properties);
                }
            }
            rx.messages++;
        }
        break;
    case MQTT_DISCONNECT:
        rx.disconnects++;
        break;
    default:
        break;
    }
    t_signal_locked();
    pthread_mutex_unlock(&t_lock);
}

static int e2e_register(mqtt_client *c)
{
    static const int commands[] = {MQTT_CONNACK, MQTT_SUBACK,  MQTT_UNSUBACK,  MQTT_PUBACK,
                                   MQTT_PUBLISH, MQTT_PUBREL, MQTT_DISCONNECT};
    size_t i;
    for (i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (mqtt_client_on(c, commands[i], e2e_cb, NULL, 0, NULL) != MQTT_OK)
            return -1;
    return 0;
}

/* A v5 client publishes QoS 1 with properties to itself: each arrives in the message
 * callback's properties; SUBACK / UNSUBACK carry one reason code per filter; the
 * subscription identifier comes back on the message. */
static void round_trip_properties(void)
{
    mqtt_client *c = v5_client("e2e", true);
    mqtt_properties *sub_a = one_int(MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 42);
    mqtt_properties *sub_bc = one_int(MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 268435455);
    mqtt_properties *pub = mqtt_properties_new();
    mqtt_properties *unsub = one_user("why", "done");
    static const uint8_t corr[6] = {'r', 0x00, 'e', 0xff, 'q', 0x00};
    char topic_a[128], topic_b[128], topic_c[128], topic_none[128];
    mqtt_subscription_v5 subs_bc[2];
    mqtt_subscription_v5 sa;
    const char *unsub_topics[3];
    int sub_mid_a, sub_mid_bc, pub_mid, unsub_mid, mid;
    uint32_t v;
    const uint8_t *d;
    size_t len;

    e2e_reset();
    t_topic(topic_a, sizeof topic_a, "a");
    t_topic(topic_b, sizeof topic_b, "b");
    t_topic(topic_c, sizeof topic_c, "c");
    t_topic(topic_none, sizeof topic_none, "never-subscribed");
    CHECK(c != NULL && sub_a != NULL && sub_bc != NULL && pub != NULL && unsub != NULL);
    CHECK_RC(mqtt_properties_add_user(sub_a, "sub", "a"), MQTT_OK);
    CHECK_RC(mqtt_properties_add_user(pub, "k1", "v1"), MQTT_OK);
    CHECK_RC(mqtt_properties_add_user(pub, "k2", "v2"), MQTT_OK);
    CHECK_RC(mqtt_properties_add_user(pub, "k1", "v3"), MQTT_OK);
    CHECK_RC(mqtt_properties_add_string(pub, MQTT_PROP_CONTENT_TYPE, "application/json"),
             MQTT_OK);
    CHECK_RC(mqtt_properties_add_binary(pub, MQTT_PROP_CORRELATION_DATA, corr, sizeof corr),
             MQTT_OK);
    CHECK_RC(mqtt_properties_add_int(pub, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, 3600), MQTT_OK);
    CHECK_RC(mqtt_properties_add_int(pub, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, 1), MQTT_OK);
    CHECK_RC(mqtt_properties_add_string(pub, MQTT_PROP_RESPONSE_TOPIC, topic_c), MQTT_OK);
    CHECK_EQ(e2e_register(c), 0);
    CHECK_RC(t_connect(c), MQTT_OK);
    CHECK_RC(mqtt_client_loop_start(c, NULL, NULL), MQTT_OK);
    CHECK_EQ(t_get(&rx.connacks), 1);

    /* one filter with identifier 42; two filters (QoS 2 and 0) with the largest identifier */
    sa.topic = topic_a;
    sa.qos = 1;
    sa.no_local = false;
    sa.retain_as_published = false;
    sa.retain_handling = 0;
    CHECK_OK(sub_mid_a, mqtt_client_subscribe_v5(c, &sa, 1, sub_a));
    subs_bc[0] = sa;
    subs_bc[0].topic = topic_b;
    subs_bc[0].qos = 2;
    subs_bc[1] = sa;
    subs_bc[1].topic = topic_c;
    subs_bc[1].qos = 0;
    CHECK_OK(sub_mid_bc, mqtt_client_subscribe_v5(c, subs_bc, 2, sub_bc));
    CHECK(t_wait(&rx.subacks, 2, 5000));
    pthread_mutex_lock(&t_lock);
    {
        struct e2e seen = rx; /* the callback only fills later slots */
        pthread_mutex_unlock(&t_lock);
        CHECK_EQ(seen.suback_mid[0], sub_mid_a);
        CHECK_EQ(seen.suback_len[0], 1);
        CHECK_EQ(seen.suback_granted_len[0], 1);
        CHECK_EQ(seen.suback_codes[0][0], 1);
        CHECK_EQ(seen.suback_mid[1], sub_mid_bc);
        CHECK_EQ(seen.suback_len[1], 2);
        CHECK_EQ(seen.suback_granted_len[1], 2);
        CHECK_EQ(seen.suback_codes[1][0], 2);
        CHECK_EQ(seen.suback_codes[1][1], 0);
    }

    /* the message with every property, QoS 1 */
    CHECK_OK(pub_mid, mqtt_client_publish_v5(c, topic_a, "hello", 5, 1, false, pub));
    CHECK(t_wait(&rx.messages, 1, 5000));
    CHECK(t_wait(&rx.pubacks, 1, 5000));
    /* then one per filter of the second subscription, without properties of their own */
    CHECK_OK(mid, mqtt_client_publish_v5(c, topic_b, "to b", 4, 2, false, NULL));
    CHECK(t_wait(&rx.messages, 2, 5000));
    CHECK_OK(mid, mqtt_client_publish_v5(c, topic_c, "to c", 4, 0, false, NULL));
    CHECK(t_wait(&rx.messages, 3, 5000));

    pthread_mutex_lock(&t_lock);
    {
        struct e2e seen = rx;
        pthread_mutex_unlock(&t_lock);
        /* the PUBACK: success */
        CHECK_EQ(seen.puback_mid, pub_mid);
        CHECK_EQ(seen.puback_error, MQTT_OK);
        CHECK_EQ(seen.puback_reason, 0);
        /* message 1: topic, payload, QoS, and every property */
        CHECK(strcmp(seen.topic[0], topic_a) == 0);
        CHECK(strcmp(seen.payload[0], "hello") == 0);
        CHECK_EQ(seen.qos[0], 1);
        CHECK(!seen.props_null[0]);
        CHECK(seen.props[0] != NULL);
        CHECK_EQ(mqtt_properties_count(seen.props[0], MQTT_PROP_USER_PROPERTY), 3);
        CHECK(user_is(seen.props[0], 0, "k1", "v1"));
        CHECK(user_is(seen.props[0], 1, "k2", "v2"));
        CHECK(user_is(seen.props[0], 2, "k1", "v3"));
        CHECK(string_is(seen.props[0], MQTT_PROP_CONTENT_TYPE, "application/json"));
        CHECK(string_is(seen.props[0], MQTT_PROP_RESPONSE_TOPIC, topic_c));
        CHECK_RC(mqtt_properties_get_binary(seen.props[0], MQTT_PROP_CORRELATION_DATA, &d, &len),
                 MQTT_OK);
        CHECK_EQ(len, sizeof corr);
        CHECK(memcmp(d, corr, sizeof corr) == 0);
        CHECK_RC(mqtt_properties_get_int(seen.props[0], MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, &v),
                 MQTT_OK);
        CHECK(v <= 3600 && v >= 3590); /* what is left of it */
        CHECK_RC(mqtt_properties_get_int(seen.props[0], MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, &v),
                 MQTT_OK);
        CHECK_EQ(v, 1);
        /* the subscription identifier of the matching subscription */
        CHECK_EQ(mqtt_properties_count(seen.props[0], MQTT_PROP_SUBSCRIPTION_IDENTIFIER), 1);
        CHECK_RC(mqtt_properties_get_int_at(seen.props[0], MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 0,
                                            &v),
                 MQTT_OK);
        CHECK_EQ(v, 42);
        CHECK_RC(mqtt_properties_get_int_at(seen.props[0], MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 1,
                                            &v),
                 MQTT_ERR_NOT_FOUND);
        CHECK_EQ(v, 42);
        /* the subscription's own user property is not the message's */
        CHECK(!user_is(seen.props[0], 3, "sub", "a"));
        /* messages 2 and 3: the other subscription's identifier and nothing else */
        CHECK(strcmp(seen.topic[1], topic_b) == 0);
        CHECK(strcmp(seen.payload[1], "to b") == 0);
        CHECK_EQ(seen.qos[1], 2);
        CHECK(seen.props[1] != NULL);
        CHECK_RC(mqtt_properties_get_int_at(seen.props[1], MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 0,
                                            &v),
                 MQTT_OK);
        CHECK_EQ(v, 268435455);
        CHECK_EQ(total(seen.props[1]), 1);
        CHECK(strcmp(seen.topic[2], topic_c) == 0);
        CHECK_EQ(seen.qos[2], 0);
        CHECK(seen.props[2] != NULL);
        CHECK_RC(mqtt_properties_get_int(seen.props[2], MQTT_PROP_SUBSCRIPTION_IDENTIFIER, &v),
                 MQTT_OK);
        CHECK_EQ(v, 268435455);
        CHECK_EQ(total(seen.props[2]), 1);
        /* the callback could not modify its list */
        CHECK(seen.ro_checked);
        CHECK_EQ(seen.ro_add_int, MQTT_ERR_INVALID_ARGUMENT);
        CHECK_EQ(seen.ro_add_string, MQTT_ERR_INVALID_ARGUMENT);
        CHECK_EQ(seen.ro_add_binary, MQTT_ERR_INVALID_ARGUMENT);
        CHECK_EQ(seen.ro_add_user, MQTT_ERR_INVALID_ARGUMENT);
        CHECK_EQ(seen.ro_clear, MQTT_ERR_INVALID_ARGUMENT);
        CHECK_EQ(seen.ro_total_before, 9);
        CHECK_EQ(seen.ro_total_after, 9);
        CHECK_EQ(total(seen.props[0]), 9);
    }

    /* unsubscribe three filters, one never subscribed: one reason code each */
    unsub_topics[0] = topic_b;
    unsub_topics[1] = topic_none;
    unsub_topics[2] = topic_c;
    CHECK_OK(unsub_mid, mqtt_client_unsubscribe_v5(c, unsub_topics, 3, unsub));
    CHECK(t_wait(&rx.unsubacks, 1, 5000));
    pthread_mutex_lock(&t_lock);
    {
        struct e2e seen = rx;
        pthread_mutex_unlock(&t_lock);
        CHECK_EQ(seen.unsuback_mid[0], unsub_mid);
        CHECK_EQ(seen.unsuback_len[0], 3);
        CHECK_EQ(seen.unsuback_codes[0][0], 0x00);
        CHECK_EQ(seen.unsuback_codes[0][1], 0x11); /* No subscription existed */
        CHECK_EQ(seen.unsuback_codes[0][2], 0x00);
    }
    /* b and c are gone: a message to c, then one to a as a barrier, only a arrives */
    CHECK_OK(mid, mqtt_client_publish_v5(c, topic_c, "gone", 4, 1, false, NULL));
    CHECK_OK(mid, mqtt_client_publish_v5(c, topic_a, "barrier", 7, 1, false, NULL));
    CHECK(t_wait(&rx.messages, 4, 5000));
    pthread_mutex_lock(&t_lock);
    CHECK_EQ(rx.messages, 4);
    CHECK(strcmp(rx.payload[3], "barrier") == 0);
    pthread_mutex_unlock(&t_lock);
    CHECK_RC(mqtt_client_disconnect_v5(c, 0, NULL), MQTT_OK);
    CHECK(t_wait(&rx.disconnects, 1, 5000));
done:
    mqtt_client_free(c);
    e2e_reset();
    mqtt_properties_free(sub_a);
    mqtt_properties_free(sub_bc);
    mqtt_properties_free(pub);
    mqtt_properties_free(unsub);
}

/* The will's properties (kept through a refused set_will_properties) reach a subscriber
 * when the client disconnects with reason 0x04. */
static void will_properties_end_to_end(void)
{
    mqtt_client *watcher = v5_client("will-watch", true);
    mqtt_client *w = v5_client("will-src", true);
    mqtt_properties *will_props = one_user("why", "test");
    mqtt_properties *bad = one_int(MQTT_PROP_SESSION_EXPIRY_INTERVAL, 5);
    mqtt_subscription_v5 sub;
    char topic[128];
    int mid;
    uint32_t v;

    e2e_reset();
    t_topic(topic, sizeof topic, "will");
    CHECK(watcher != NULL && w != NULL && will_props != NULL && bad != NULL);
    CHECK_RC(mqtt_properties_add_string(will_props, MQTT_PROP_CONTENT_TYPE, "text/plain"),
             MQTT_OK);
    CHECK_RC(mqtt_properties_add_int(will_props, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, 600),
             MQTT_OK);
    CHECK_RC(mqtt_client_set_will(w, topic, "gone", 4, 1, false), MQTT_OK);
    CHECK_RC(mqtt_client_set_will_properties(w, will_props), MQTT_OK);
    CHECK_RC(mqtt_client_set_will_properties(w, bad), MQTT_ERR_INVALID_PROPERTY);
    mqtt_properties_free(will_props); /* copied by the call */
    will_props = NULL;

    CHECK_EQ(e2e_register(watcher), 0);
    CHECK_RC(t_connect(watcher), MQTT_OK);
    CHECK_RC(mqtt_client_loop_start(watcher, NULL, NULL), MQTT_OK);
    sub.topic = topic;
    sub.qos = 1;
    sub.no_local = false;
    sub.retain_as_published = false;
    sub.retain_handling = 0;
    CHECK_OK(mid, mqtt_client_subscribe_v5(watcher, &sub, 1, NULL));
    CHECK(t_wait(&rx.subacks, 1, 5000));

    CHECK_RC(t_connect(w), MQTT_OK);
    CHECK_RC(mqtt_client_disconnect_v5(w, 0x04, NULL), MQTT_OK); /* with will */
    CHECK(t_wait(&rx.messages, 1, 5000));
    pthread_mutex_lock(&t_lock);
    {
        struct e2e seen = rx;
        pthread_mutex_unlock(&t_lock);
        CHECK(strcmp(seen.topic[0], topic) == 0);
        CHECK(strcmp(seen.payload[0], "gone") == 0);
        CHECK(seen.props[0] != NULL);
        CHECK(user_is(seen.props[0], 0, "why", "test"));
        CHECK(string_is(seen.props[0], MQTT_PROP_CONTENT_TYPE, "text/plain"));
        CHECK_RC(mqtt_properties_get_int(seen.props[0], MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, &v),
                 MQTT_OK);
        CHECK(v <= 600 && v >= 590);
    }
    CHECK_RC(mqtt_client_disconnect(watcher), MQTT_OK);
done:
    mqtt_client_free(w);
    mqtt_client_free(watcher);
    e2e_reset();
    mqtt_properties_free(will_props);
    mqtt_properties_free(bad);
}

int main(int argc, char **argv)
{
    const char *only = t_init(argc, argv);

    RUN(properties_null_arguments);
    RUN(properties_add_invalid);
    RUN(properties_get);
    RUN(properties_user_order);
    RUN(properties_copy_and_clear);
    RUN(set_protocol_arguments);
    RUN(set_protocol_while_connected);
    RUN(null_client);
    RUN(v5_calls_on_311_client_offline);
    RUN(v5_calls_on_311_client_online);
    RUN(publish_v5_invalid_properties);
    RUN(subscribe_v5_invalid_arguments);
    RUN(connect_and_will_properties_invalid);
    RUN(disconnect_v5_invalid);
    RUN(round_trip_properties);
    RUN(will_properties_end_to_end);
    return t_finish("v5_api");
}
