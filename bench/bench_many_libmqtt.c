/*
 * bench_many_libmqtt.c - many libmqtt clients in one process on one reactor,
 * run in the caller's thread (mqtt_reactor_run: no library thread at all).
 * See many_common.h for the command line and the output.
 */
#include "many_common.h"

#include <mqtt.h>

#define SLOTS 64

struct slot {
    mqtt_client *c;
    int connected;
    char topic[32];
    double next;
    int mid_at[SLOTS];
    double sent_at[SLOTS];
};

static long connected, acked, sent;

static void on_connack(mqtt_client *c, const mqtt_data *d, void *ud)
{
    struct slot *s = ud;
    (void)c;
    if (d->return_code == 0 && !s->connected) {
        s->connected = 1;
        connected++;
    }
}

static void on_puback(mqtt_client *c, const mqtt_data *d, void *ud)
{
    struct slot *s = ud;
    (void)c;
    acked++;
    if (s->mid_at[d->mid % SLOTS] == d->mid) {
        lat_add((now_s() - s->sent_at[d->mid % SLOTS]) * 1e6);
        s->mid_at[d->mid % SLOTS] = 0;
    }
}

int main(int argc, char **argv)
{
    struct many_args a = {0};
    many_parse(argc, argv, &a);
    long n = a.clients;
    struct slot *s = calloc((size_t)n, sizeof *s);
    if (!s)
        return 1;
    touch_pages(s, (size_t)n * sizeof *s);
    long rss_before = proc_status("VmRSS");
    double t0 = now_s();
    mqtt_reactor *r = mqtt_reactor_new();
    if (!r)
        return 1;
    long half = first_half(&a), rss_half = 0;
    for (long i = 0; i < n; i++) {
        if (i == half && !a.pub) {
            while (connected < half && now_s() < t0 + 120)
                mqtt_reactor_run(r, 100);
            rss_half = proc_status("VmRSS");
        }
        char id[48];
        snprintf(id, sizeof id, "many-mqtt-%ld-%ld", (long)getpid(), i);
        snprintf(s[i].topic, sizeof s[i].topic, "many/%ld", i);
        s[i].c = mqtt_client_new(id, true);
        if (!s[i].c || mqtt_client_on(s[i].c, MQTT_CONNACK, on_connack, NULL, 0, &s[i]) != MQTT_OK ||
            mqtt_client_on(s[i].c, MQTT_PUBACK, on_puback, NULL, 0, &s[i]) != MQTT_OK ||
            mqtt_reactor_add(r, s[i].c, NULL, NULL) != MQTT_OK ||
            mqtt_client_connect_async(s[i].c, a.host, (uint16_t)a.keepalive, (uint16_t)a.port) != MQTT_OK) {
            fprintf(stderr, "bench_many_libmqtt: client %ld failed\n", i);
            return 1;
        }
    }
    double deadline = t0 + 120;
    while (connected < n && now_s() < deadline)
        mqtt_reactor_run(r, 100);
    double connect_s = now_s() - t0;

    if (!a.pub) {
        double c0 = cpu_s(), w0 = now_s();
        while (now_s() - w0 < a.idle_s)
            mqtt_reactor_run(r, (int)((a.idle_s - (now_s() - w0)) * 1000 + 0.999));
        report_idle("libmqtt", &a, connected, connect_s, rss_before, rss_half, proc_status("VmRSS"), cpu_s() - c0,
                    now_s() - w0);
    } else {
        double period = 1.0 / (double)a.rate;
        double w0 = now_s(), c0 = cpu_s();
        for (long i = 0; i < n; i++)
            s[i].next = w0 + period * (double)i / (double)n;
        unsigned char payload[64] = {0};
        while (now_s() - w0 < a.pub_s) {
            double t = now_s(), due = t + 1;
            for (long i = 0; i < n; i++) {
                if (s[i].next <= t) {
                    int mid = mqtt_client_publish(s[i].c, s[i].topic, payload, sizeof payload, 1, false);
                    if (mid > 0) {
                        sent++;
                        s[i].mid_at[mid % SLOTS] = mid;
                        s[i].sent_at[mid % SLOTS] = t;
                    }
                    s[i].next += period;
                }
                if (s[i].next < due)
                    due = s[i].next;
            }
            int wait = (int)((due - now_s()) * 1000 + 0.999); /* never spin */
            mqtt_reactor_run(r, wait < 0 ? 0 : wait);
        }
        double drain = now_s() + 10;
        while (acked < sent && now_s() < drain)
            mqtt_reactor_run(r, 10);
        report_pub("libmqtt", &a, connected, sent, acked, cpu_s() - c0, now_s() - w0);
    }
    for (long i = 0; i < n; i++)
        mqtt_client_disconnect(s[i].c);
    for (int k = 0; k < 5; k++)
        mqtt_reactor_run(r, 10);
    for (long i = 0; i < n; i++)
        mqtt_client_free(s[i].c);
    mqtt_reactor_free(r);
    free(s);
    return 0;
}
