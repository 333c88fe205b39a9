//! Security.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn least_privilege_cross_namespace_refusal_no_token_in_logs_and_a_locked_down_chart()
 {
    let Some(env) = testbed_env() else { return };
    let _serial = SERIAL.lock().await;
    let admin = common::client_from(&env.admin_kubeconfig).await;
    let id = suffix();
    let ns = format!("faults-sec-{id}");
    let other = format!("faults-sec-other-{id}");
    let _cleanup = Namespaces(
        env.admin_kubeconfig.clone(),
        vec![ns.clone(), other.clone()],
    );
    create_namespace(&admin, &ns).await;
    create_namespace(&admin, &other).await;
    create_deployments(
        &admin,
        &ns,
        &[
            ("payment", 2),
            ("training", 8),
            ("bystander", 3),
            ("x-payment", 2),
        ],
    )
    .await;
    create_deployments(&admin, &other, &[("victim", 6)]).await;
    create_policy(&admin, &ns, &policy("own", "", CHECKOUT, 50)).await;
    // A policy in `ns` that would shrink a workload of another namespace.
    let mut cross = policy("cross", "x-", CHECKOUT, 10);
    cross.spec.offline[0].target.name = Some("victim".into());
    cross.spec.offline[0].target.namespace = Some(other.clone());
    create_policy(&admin, &ns, &cross).await;

    let mut problems = Vec::new();
    let mut wrong = 0;
    // Prometheus behind a bearer token: the proxy sees it, the logs never do.
    let token = format!("tok-{}-{}", suffix(), std::process::id());
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token).expect("token file");
    let proxy = Proxy::start(&env.prometheus_url).await;
    let token_path = token_file.display().to_string();
    let mut daemon = Daemon::spawn(
        &env,
        &proxy.url(),
        &env.metrics_addr,
        &["--namespace", &ns, "--prometheus-token-file", &token_path],
    );
    wait_settled(&admin, &ns, "own", Duration::from_secs(240)).await;
    let refused = wait_until(
        "the cross-namespace policy to be refused",
        Duration::from_secs(60),
        async || {
            let (_, status) = status_of(&admin, &ns, "cross").await?;
            condition(&status, "Ready")
                .filter(|(s, _, _)| *s == "False")
                .map(|(_, r, m)| (r.to_string(), m.to_string()))
        },
    )
    .await;
    if refused.0 != "InvalidPolicy" || !refused.1.contains(&other) {
        problems.push(format!("cross-namespace policy: Ready=False {refused:?}"));
    }
    // Several more cycles, then look at what was touched.
    tokio::time::sleep(Duration::from_secs(10)).await;
    for (namespace, name) in [(&ns, "bystander"), (&other, "victim"), (&ns, "x-payment")] {
        let d = Api::<Deployment>::namespaced(admin.clone(), namespace)
            .get(name)
            .await
            .expect("reading a deployment");
        let managers: Vec<String> = d
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|m| m.manager.clone())
            .collect();
        if managers.iter().any(|m| m == "tideshift") {
            wrong += 1;
            problems.push(format!("tideshift wrote {namespace}/{name}: {managers:?}"));
        }
    }
    let authorizations = proxy
        .state
        .authorizations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if authorizations != vec![format!("Bearer {token}")] {
        problems.push(format!(
            "Prometheus saw Authorization headers {authorizations:?}"
        ));
    }
    daemon.kill();
    let log = daemon.log_text();
    if log.contains(&token) {
        problems.push("the Prometheus bearer token is in the daemon's log".into());
    }
    let kubeconfig = std::fs::read_to_string(&env.daemon_kubeconfig).expect("daemon kubeconfig");
    let sa_token = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("token in the daemon kubeconfig");
    if log.contains(sa_token) {
        problems.push("the ServiceAccount token is in the daemon's log".into());
    }

    // The daemon's identity may scale, not edit, delete or read secrets.
    let daemon_client = common::client_from(&env.daemon_kubeconfig).await;
    let deployments: Api<Deployment> = Api::namespaced(daemon_client.clone(), &ns);
    let attempts = [
        (
            "patch a whole Deployment",
            deployments
                .patch(
                    "bystander",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
                )
                .await
                .err(),
        ),
        (
            "delete a Deployment",
            deployments
                .delete("bystander", &DeleteParams::default())
                .await
                .err(),
        ),
        (
            "list Secrets",
            Api::<Secret>::namespaced(daemon_client.clone(), &ns)
                .list(&ListParams::default())
                .await
                .err(),
        ),
        (
            "create a Deployment",
            deployments
                .create(&PostParams::default(), &deployment("intruder", 1))
                .await
                .err(),
        ),
    ];
    for (what, error) in attempts {
        match error {
            Some(kube::Error::Api(status)) if status.code == 403 => {}
            other => {
                wrong += 1;
                problems.push(format!("the daemon's identity could {what}: {other:?}"));
            }
        }
    }

    // The chart runs the daemon as non-root on a read-only root filesystem.
    let helm = std::env::var("TESTBED_HELM").unwrap_or_else(|_| "helm".into());
    let rendered = std::process::Command::new(&helm)
        .args([
            "template",
            "t",
            concat!(env!("CARGO_MANIFEST_DIR"), "/charts/tideshift"),
        ])
        .output()
        .expect("running helm template");
    assert!(
        rendered.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let text = String::from_utf8_lossy(&rendered.stdout).to_string();
    let mut checked = false;
    for document in serde_yaml::Deserializer::from_str(&text) {
        let Ok(object) = <Value as serde::Deserialize>::deserialize(document) else {
            continue;
        };
        if object["kind"] != "Deployment" {
            continue;
        }
        checked = true;
        let pod = &object["spec"]["template"]["spec"];
        if pod["securityContext"]["runAsNonRoot"] != true {
            problems.push(format!(
                "chart pod securityContext: {}",
                pod["securityContext"]
            ));
        }
        for container in pod["containers"].as_array().into_iter().flatten() {
            let sc = &container["securityContext"];
            if sc["readOnlyRootFilesystem"] != true
                || sc["allowPrivilegeEscalation"] != false
                || sc["runAsUser"] == 0
            {
                problems.push(format!("chart container securityContext: {sc}"));
            }
        }
    }
    if !checked {
        problems.push("no Deployment in the rendered chart".into());
    }
    let figures = Figures {
        passed: problems.is_empty(),
        wrong_scale_actions: wrong,
        lost_actions: 0,
        recovery_seconds: None,
    };
    report("security", &figures, &problems);
}
