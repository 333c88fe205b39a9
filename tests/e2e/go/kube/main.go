// Command testbed-kube is a multi-call binary for the tideshift test bed.
//
// Linking k8s.io/kubernetes is the slow part of a cold build, so every component
// shares one binary: `testbed-kube kube-apiserver ...`, or a symlink named
// kube-apiserver. etcd comes from go.etcd.io/etcd/server/v3/embed at the very
// version the Kubernetes module graph already selects, so the graph stays the one
// upstream tests.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	_ "time/tzdata"

	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/component-base/version"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

const usage = "usage: testbed-kube {kube-apiserver|kube-controller-manager|kube-scheduler|kubectl|etcd|version} [flags]"

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if !isComponent(name) {
		if len(args) == 0 {
			fmt.Fprintln(os.Stderr, usage)
			os.Exit(2)
		}
		name = args[0]
		args = args[1:]
	}
	// cobra reads os.Args[1:] itself; present each component with its own argv.
	os.Args = append([]string{name}, args...)
	os.Exit(run(name))
}

func isComponent(name string) bool {
	switch name {
	case "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "etcd":
		return true
	}
	return false
}

func run(name string) int {
	switch name {
	case "kube-apiserver":
		return cli.Run(apiserver.NewAPIServerCommand())
	case "kube-controller-manager":
		return cli.Run(controllermanager.NewControllerManagerCommand())
	case "kube-scheduler":
		return cli.Run(scheduler.NewSchedulerCommand())
	case "kubectl":
		logs.GlogSetter(kubectlcmd.GetLogVerbosity(os.Args)) // nolint:errcheck
		if err := cli.RunNoErrOutput(kubectlcmd.NewDefaultKubectlCommand()); err != nil {
			kubectlutil.CheckErr(err)
		}
		return 0
	case "etcd":
		return runEtcd(os.Args[1:])
	case "version":
		fmt.Println(version.Get().GitVersion)
		return 0
	}
	fmt.Fprintf(os.Stderr, "unknown component %q\n%s\n", name, usage)
	return 2
}
