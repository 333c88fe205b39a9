package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// runEtcd starts a single-member etcd with client TLS. Only the flags the
// test bed uses are accepted, so a typo fails loudly instead of being ignored.
func runEtcd(args []string) int {
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "", "data directory (required)")
	clientURL := fs.String("listen-client-url", "", "client URL, e.g. https://127.0.0.1:2379 (required)")
	peerURL := fs.String("listen-peer-url", "", "peer URL, e.g. http://127.0.0.1:2380 (required)")
	metricsURL := fs.String("listen-metrics-url", "", "optional plain HTTP URL for /metrics and /health")
	certFile := fs.String("cert-file", "", "server certificate for client TLS")
	keyFile := fs.String("key-file", "", "server key for client TLS")
	caFile := fs.String("trusted-ca-file", "", "CA that client certificates must chain to")
	logLevel := fs.String("log-level", "warn", "zap log level")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dataDir == "" || *clientURL == "" || *peerURL == "" {
		fmt.Fprintln(os.Stderr, "etcd: --data-dir, --listen-client-url and --listen-peer-url are required")
		return 2
	}
	cu, err := url.Parse(*clientURL)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd: bad --listen-client-url: %v\n", err)
		return 2
	}
	pu, err := url.Parse(*peerURL)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd: bad --listen-peer-url: %v\n", err)
		return 2
	}
	cfg := embed.NewConfig()
	cfg.Name = "testbed"
	cfg.Dir = *dataDir
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = *logLevel
	// A throwaway test cluster: fsync only costs time on a shared 2-core box.
	cfg.UnsafeNoFsync = true
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "5m"
	if *metricsURL != "" {
		mu, err := url.Parse(*metricsURL)
		if err != nil {
			fmt.Fprintf(os.Stderr, "etcd: bad --listen-metrics-url: %v\n", err)
			return 2
		}
		cfg.ListenMetricsUrls = []url.URL{*mu}
	}
	if *certFile != "" {
		cfg.ClientTLSInfo.CertFile = *certFile
		cfg.ClientTLSInfo.KeyFile = *keyFile
		cfg.ClientTLSInfo.TrustedCAFile = *caFile
		cfg.ClientTLSInfo.ClientCertAuth = *caFile != ""
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd: start: %v\n", err)
		return 1
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
		fmt.Fprintln(os.Stderr, "etcd: ready")
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		fmt.Fprintln(os.Stderr, "etcd: not ready after 60s")
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case err := <-e.Err():
		fmt.Fprintf(os.Stderr, "etcd: %v\n", err)
		return 1
	case <-sig:
		return 0
	}
}
