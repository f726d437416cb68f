// Package metrics holds slipway's Prometheus collectors and the small functions
// the rest of slipway calls to feed them. Every process (server, worker, dev)
// serves its own registry at /metrics with [Handler]; Prometheus adds them up.
//
// The functions are safe for concurrent use and never fail: a metric is a side
// note, and recording one must not change what a request or a build does.
package metrics

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const namespace = "slipway"

// Registry holds every slipway collector plus the Go runtime and process
// collectors. Tests may read it with prometheus/testutil.
var Registry = prometheus.NewRegistry()

// durationBuckets fit builds: from a cached one in seconds to an hour-long one.
var durationBuckets = []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600}

// pickupBuckets fit the wait between a push and a worker taking its build.
var pickupBuckets = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}

var (
	webhooks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "webhooks_total",
		Help:      "Webhook deliveries received, by forge and outcome (accepted, ignored, rejected, error).",
	}, []string{"forge", "outcome"})

	pickup = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "build_pickup_latency_seconds",
		Help:      "Time from a push queueing a build to a worker first starting it, by platform.",
		Buckets:   pickupBuckets,
	}, []string{"platform"})

	duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "build_duration_seconds",
		Help:      "Time one attempt of a build ran on a worker, from start to final state, by platform and final state.",
		Buckets:   durationBuckets,
	}, []string{"platform", "state"})

	finished = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "builds_finished_total",
		Help:      "Builds that reached a final state, by state (succeeded, failed, canceled).",
	}, []string{"state"})

	promotions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "promotions_total",
		Help:      "Promotions of a tested build to release tags, by outcome (succeeded, failed).",
	}, []string{"outcome"})
)

func init() {
	Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		webhooks, pickup, duration, finished, promotions,
	)
}

// Handler serves the registry in the Prometheus text format, for GET /metrics.
func Handler() http.Handler {
	return promhttp.HandlerFor(Registry, promhttp.HandlerOpts{Registry: Registry})
}

// Webhook outcomes, the values of the outcome label of slipway_webhooks_total.
const (
	WebhookAccepted = "accepted" // a build was queued (or a redelivery found its build), or a ping answered
	WebhookIgnored  = "ignored"  // a valid delivery with nothing to build (deletion, other event)
	WebhookRejected = "rejected" // a 4xx: bad signature, bad payload, owner not allowed
	WebhookError    = "error"    // a 5xx: slipway could not take the delivery
)

// WebhookReceived counts one delivery from forge (github, gitlab, gitea) with
// one of the Webhook* outcomes.
func WebhookReceived(forge, outcome string) {
	webhooks.WithLabelValues(forge, outcome).Inc()
}

// BuildStarted records how long a build waited in the queue before a worker
// started it, once per platform it builds.
func BuildStarted(platforms []string, waited time.Duration) {
	for _, p := range platforms {
		pickup.WithLabelValues(p).Observe(max(waited, 0).Seconds())
	}
}

// BuildFinished counts a build under its final state and records how long the
// attempt ran, once per platform of platforms ("unknown" when there are none:
// the build failed before its platforms were known).
func BuildFinished(platforms []string, state string, ran time.Duration) {
	finished.WithLabelValues(state).Inc()
	if len(platforms) == 0 {
		platforms = []string{"unknown"}
	}
	for _, p := range platforms {
		duration.WithLabelValues(p, state).Observe(ran.Seconds())
	}
}

// PromotionDone counts one promotion with its outcome ("succeeded" or "failed").
func PromotionDone(outcome string) {
	promotions.WithLabelValues(outcome).Inc()
}

// probeTimeout bounds each Func a collector calls while Prometheus scrapes.
const probeTimeout = 2 * time.Second

var (
	registerMu sync.Mutex
	registered = map[string]prometheus.Collector{}
)

// replace registers c under key, unregistering what an earlier call put there:
// a test may start a server or a worker in-process more than once.
func replace(key string, c prometheus.Collector) error {
	registerMu.Lock()
	defer registerMu.Unlock()
	if old, ok := registered[key]; ok {
		Registry.Unregister(old)
	}
	if err := Registry.Register(c); err != nil {
		return err
	}
	registered[key] = c
	return nil
}

// QueueStats is what the queue collector reports.
type QueueStats struct {
	// Depth is the number of jobs waiting to be claimed.
	Depth int
	// Oldest is how long the oldest waiting job has waited; zero when none waits.
	Oldest time.Duration
	// Running is the number of jobs under a worker's lease.
	Running int
}

// RegisterQueue adds the queue gauges (depth, running, oldest queued age), read
// with stats on every scrape. Call it once per process, in the process that
// serves /metrics for the queue (the server): every scrape is one query. A
// later call replaces the earlier collector.
func RegisterQueue(stats func(ctx context.Context) (QueueStats, error)) error {
	return replace("queue", &queueCollector{stats: stats})
}

var (
	queueDepthDesc   = prometheus.NewDesc(namespace+"_queue_depth", "Builds waiting in the queue for a worker.", nil, nil)
	queueRunningDesc = prometheus.NewDesc(namespace+"_queue_running", "Builds under a worker's lease.", nil, nil)
	queueOldestDesc  = prometheus.NewDesc(namespace+"_queue_oldest_age_seconds", "How long the oldest waiting build has waited; 0 when none waits.", nil, nil)
	queueUpDesc      = prometheus.NewDesc(namespace+"_queue_stats_up", "1 when the queue's numbers could be read from the database at this scrape, else 0.", nil, nil)
)

type queueCollector struct {
	stats func(ctx context.Context) (QueueStats, error)
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueDepthDesc
	ch <- queueRunningDesc
	ch <- queueOldestDesc
	ch <- queueUpDesc
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	s, err := c.stats(ctx)
	if err != nil {
		// No made-up zeros: a gap is what the numbers are while the database
		// does not answer; queue_stats_up says why.
		ch <- prometheus.MustNewConstMetric(queueUpDesc, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(queueUpDesc, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(s.Depth))
	ch <- prometheus.MustNewConstMetric(queueRunningDesc, prometheus.GaugeValue, float64(s.Running))
	ch <- prometheus.MustNewConstMetric(queueOldestDesc, prometheus.GaugeValue, s.Oldest.Seconds())
}

// Builder is one buildkitd of a worker's pool, for the pool health gauge.
type Builder struct {
	// Name identifies the builder, e.g. its address without credentials.
	Name string
	// Platforms the builder serves, e.g. "linux/amd64,linux/arm64".
	Platforms string
	// Ping returns nil when the builder answers.
	Ping func(ctx context.Context) error
}

var builderUpDesc = prometheus.NewDesc(namespace+"_builder_up",
	"1 when the buildkitd answered a ping at this scrape, else 0.", []string{"builder", "platforms"}, nil)

// RegisterBuilders adds slipway_builder_up for each builder, pinged on every
// scrape (in parallel, each within 2 seconds). Call it once per worker process;
// a later call replaces the earlier pool.
func RegisterBuilders(builders []Builder) error {
	return replace("builders", &builderCollector{builders: builders})
}

type builderCollector struct {
	builders []Builder
}

func (c *builderCollector) Describe(ch chan<- *prometheus.Desc) { ch <- builderUpDesc }

func (c *builderCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, b := range c.builders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			up := 0.0
			if b.Ping(ctx) == nil {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(builderUpDesc, prometheus.GaugeValue, up, b.Name, b.Platforms)
		}()
	}
	wg.Wait()
}
