//! The files under `deploy/` parse, and agree with each other and with the server: ports,
//! probes, selectors, the autoscaler's metric (down to the name the server exports), the
//! image's exposed port and files, and the settings the pods mount.
mod manifests;

use manifests::*;
use serde_yaml::Value;

#[test]
fn every_yaml_file_under_deploy_parses() {
    let docs = load_all();
    for doc in docs.iter().filter(|d| d.kind().is_some()) {
        assert!(
            doc.value
                .get("apiVersion")
                .and_then(Value::as_str)
                .is_some(),
            "{}: no apiVersion",
            doc.what()
        );
        assert!(doc.name().is_some(), "{}: no metadata.name", doc.what());
    }
    for (kind, name) in [
        ("Deployment", "mm"),
        ("Service", "mm"),
        ("ConfigMap", "mm-settings"),
        ("PodDisruptionBudget", "mm"),
        ("HorizontalPodAutoscaler", "mm"),
        ("Deployment", "redis"),
        ("Service", "redis"),
    ] {
        find(&docs, kind, name);
    }
}

#[test]
fn services_target_declared_container_ports() {
    let docs = load_all();
    let deployments: Vec<&Doc> = of_kind(&docs, "Deployment").collect();
    for service in of_kind(&docs, "Service") {
        let selector = labels(service, &["spec", "selector"]);
        let targets: Vec<&&Doc> = deployments
            .iter()
            .filter(|d| selects(&selector, &pod_labels(d)))
            .collect();
        let [deployment] = targets.as_slice() else {
            panic!(
                "{}: spec.selector {selector:?} selects the pods of {} Deployments, not one",
                service.what(),
                targets.len()
            );
        };
        let ports = seq(at(&service.value, &["spec", "ports"]));
        assert!(!ports.is_empty(), "{}: spec.ports is empty", service.what());
        for port in ports {
            let target = port
                .get("targetPort")
                .or_else(|| port.get("port"))
                .unwrap_or_else(|| panic!("{}: a port has no port/targetPort", service.what()));
            assert!(
                resolve_port(deployment, target).is_some(),
                "{}: spec.ports[].targetPort {target:?} is not a container port of {} (it declares {:?})",
                service.what(),
                deployment.what(),
                declared_ports(deployment)
            );
        }
    }
    let service = find(&docs, "Service", "mm");
    let port = &seq(at(&service.value, &["spec", "ports"]))[0];
    assert_eq!(
        port.get("targetPort").and_then(Value::as_str),
        Some("http"),
        "{}: spec.ports[0].targetPort must be the named port `http`",
        service.what()
    );
}

#[test]
fn probes_get_health_on_a_declared_port() {
    let docs = load_all();
    let deployment = find(&docs, "Deployment", "mm");
    let container = mm_container(deployment);
    for probe in ["readinessProbe", "livenessProbe"] {
        assert!(
            at(container, &[probe, "httpGet"]).is_some(),
            "{}: container `mm` has no {probe}.httpGet",
            deployment.what()
        );
    }
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let Some(get) = at(container, &[probe, "httpGet"]) else {
            continue;
        };
        assert_eq!(
            get.get("path").and_then(Value::as_str),
            Some("/health"),
            "{}: {probe}.httpGet.path must be /health (the server's health route)",
            deployment.what()
        );
        let port = get
            .get("port")
            .unwrap_or_else(|| panic!("{}: {probe}.httpGet has no port", deployment.what()));
        assert_eq!(
            resolve_port(deployment, port),
            Some(http_port(deployment)),
            "{}: {probe}.httpGet.port {port:?} is not the declared `http` container port",
            deployment.what()
        );
    }
}

#[test]
fn selectors_match_the_pod_labels() {
    let docs = load_all();
    for deployment in of_kind(&docs, "Deployment") {
        let own = labels(deployment, &["spec", "selector", "matchLabels"]);
        assert!(
            selects(&own, &pod_labels(deployment)),
            "{}: spec.selector.matchLabels {own:?} does not match spec.template.metadata.labels",
            deployment.what()
        );
    }
    let mm = find(&docs, "Deployment", "mm");
    let redis = find(&docs, "Deployment", "redis");
    let pdb = find(&docs, "PodDisruptionBudget", "mm");
    let service = find(&docs, "Service", "mm");
    for (doc, path) in [
        (pdb, &["spec", "selector", "matchLabels"][..]),
        (service, &["spec", "selector"][..]),
    ] {
        let selector = labels(doc, path);
        assert!(
            selects(&selector, &pod_labels(mm)),
            "{}: {} {selector:?} does not match the pod labels of {} {:?}",
            doc.what(),
            path.join("."),
            mm.what(),
            pod_labels(mm)
        );
        assert!(
            !selects(&selector, &pod_labels(redis)),
            "{}: {} {selector:?} also selects the pods of {}",
            doc.what(),
            path.join("."),
            redis.what()
        );
    }
    assert_eq!(
        pdb.field(&["spec", "minAvailable"]).as_u64(),
        Some(1),
        "{}: spec.minAvailable should be 1",
        pdb.what()
    );
}

#[test]
fn autoscaler_scales_the_deployment_on_a_metric_the_server_exports() {
    let docs = load_all();
    let hpa = find(&docs, "HorizontalPodAutoscaler", "mm");
    assert_eq!(
        hpa.value.get("apiVersion").and_then(Value::as_str),
        Some("autoscaling/v2"),
        "{}: apiVersion",
        hpa.what()
    );
    assert_eq!(
        hpa.str_field(&["spec", "scaleTargetRef", "kind"]),
        "Deployment",
        "{}: spec.scaleTargetRef.kind",
        hpa.what()
    );
    let target = hpa.str_field(&["spec", "scaleTargetRef", "name"]);
    let deployment = find(&docs, "Deployment", target);
    assert_eq!(target, "mm", "{}: spec.scaleTargetRef.name", hpa.what());

    let min = hpa.field(&["spec", "minReplicas"]).as_u64();
    let max = hpa.field(&["spec", "maxReplicas"]).as_u64();
    assert!(
        matches!((min, max), (Some(a), Some(b)) if a >= 2 && a <= b),
        "{}: spec.minReplicas {min:?} / maxReplicas {max:?} (want 2 <= min <= max)",
        hpa.what()
    );
    let pdb = find(&docs, "PodDisruptionBudget", "mm");
    let min_available = pdb.field(&["spec", "minAvailable"]).as_u64().unwrap_or(0);
    assert!(
        min.unwrap_or(0) > min_available,
        "{}: spec.minReplicas must exceed {}'s minAvailable, or no pod may ever be evicted",
        hpa.what(),
        pdb.what()
    );
    let replicas = deployment.field(&["spec", "replicas"]).as_u64();
    assert!(
        replicas >= min && replicas <= max,
        "{}: spec.replicas {replicas:?} is outside the HPA's {min:?}..={max:?}",
        deployment.what()
    );

    let metrics = seq(at(&hpa.value, &["spec", "metrics"]));
    let pods: Vec<&Value> = metrics
        .iter()
        .filter(|m| m.get("type").and_then(Value::as_str) == Some("Pods"))
        .collect();
    let [pods] = pods.as_slice() else {
        panic!(
            "{}: spec.metrics must hold one metric of type Pods",
            hpa.what()
        );
    };
    let name = at(pods, &["pods", "metric", "name"])
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{}: spec.metrics[Pods].pods.metric.name", hpa.what()));
    assert_eq!(
        at(pods, &["pods", "target", "type"]).and_then(Value::as_str),
        Some("AverageValue"),
        "{}: spec.metrics[Pods].pods.target.type",
        hpa.what()
    );
    assert!(
        at(pods, &["pods", "target", "averageValue"]).is_some(),
        "{}: spec.metrics[Pods].pods.target.averageValue is missing",
        hpa.what()
    );
    assert!(
        metrics.iter().any(|m| {
            m.get("type").and_then(Value::as_str) == Some("Resource")
                && at(m, &["resource", "name"]).and_then(Value::as_str) == Some("cpu")
        }),
        "{}: spec.metrics has no cpu Resource metric",
        hpa.what()
    );

    // The Prometheus adapter publishes the metric under the name the HPA asks for.
    let adapter = docs
        .iter()
        .find(|d| d.kind().is_none() && d.value.get("rules").is_some())
        .expect("deploy/: no Prometheus adapter rules (a document with `rules:`)");
    let rules = seq(adapter.value.get("rules"));
    let rule = rules
        .iter()
        .find(|r| {
            let exposed = at(r, &["name", "as"])
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            match exposed {
                Some(exposed) => exposed == name,
                None => {
                    at(r, &["name", "matches"]).and_then(Value::as_str)
                        == Some(format!("^{name}$").as_str())
                }
            }
        })
        .unwrap_or_else(|| {
            panic!(
                "{}: no rule's name.as exposes `{name}` (the metric {} asks for)",
                adapter.file,
                hpa.what()
            )
        });
    let series = rule
        .get("seriesQuery")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{}: the rule for `{name}` has no seriesQuery", adapter.file));
    assert!(
        series.starts_with(&format!("{name}{{")) || series == name,
        "{}: seriesQuery `{series}` does not select the series `{name}`",
        adapter.file
    );
    for label in ["namespace", "pod"] {
        assert_eq!(
            at(rule, &["resources", "overrides", label, "resource"]).and_then(Value::as_str),
            Some(label),
            "{}: resources.overrides.{label}.resource",
            adapter.file
        );
    }
    let query = rule
        .get("metricsQuery")
        .and_then(Value::as_str)
        .unwrap_or_default();
    assert!(
        query.contains("<<.Series>>") && query.contains("by (<<.GroupBy>>)"),
        "{}: metricsQuery `{query}` must aggregate <<.Series>> by (<<.GroupBy>>)",
        adapter.file
    );

    // The server exports it: the registry's prefix plus a name the metrics source registers.
    let mod_rs = read("crates/server/src/metrics/mod.rs");
    let manager_rs = read("crates/server/src/metrics/manager.rs");
    let prefix = mod_rs
        .split_once("Registry::with_prefix(\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(prefix, _)| prefix)
        .expect("crates/server/src/metrics/mod.rs: no Registry::with_prefix(\"...\")");
    let bare = name.strip_prefix(&format!("{prefix}_")).unwrap_or_else(|| {
        panic!(
            "{}: metric `{name}` lacks the server's registry prefix `{prefix}_`",
            hpa.what()
        )
    });
    let literal = format!("\"{bare}\"");
    assert!(
        manager_rs.contains(&literal) || mod_rs.contains(&literal),
        "{}: metric `{name}`: the server registers no `{bare}` (crates/server/src/metrics/)",
        hpa.what()
    );
}

#[test]
fn image_exposes_the_container_port_and_is_scraped_there() {
    let docs = load_all();
    let deployment = find(&docs, "Deployment", "mm");
    let port = http_port(deployment);
    let instructions = dockerfile_instructions();

    let exposed: Vec<u64> = instructions
        .iter()
        .filter(|(op, _)| op == "EXPOSE")
        .flat_map(|(_, rest)| rest.split_whitespace())
        .map(|p| {
            p.trim_end_matches("/tcp")
                .parse()
                .unwrap_or_else(|_| panic!("deploy/Dockerfile: EXPOSE `{p}` is not a port"))
        })
        .collect();
    assert_eq!(
        exposed,
        vec![port],
        "deploy/Dockerfile: EXPOSE must be the `http` containerPort {port} of {}",
        deployment.what()
    );
    let image_words: Vec<String> = instructions
        .iter()
        .filter(|(op, _)| op == "CMD" || op == "ENTRYPOINT")
        .flat_map(|(_, rest)| dockerfile_words(rest))
        .collect();
    for p in addr_ports(&image_words) {
        assert_eq!(
            p, port,
            "deploy/Dockerfile: CMD `--addr` listens on {p}, EXPOSE says {port}"
        );
    }

    let container = mm_container(deployment);
    let mut words = string_list(container.get("command"));
    words.extend(string_list(container.get("args")));
    for p in addr_ports(&words) {
        assert_eq!(
            p,
            port,
            "{}: args `--addr` listens on {p}, the `http` containerPort is {port}",
            deployment.what()
        );
    }

    let annotations = |key: &str| {
        at(
            &deployment.value,
            &["spec", "template", "metadata", "annotations", key],
        )
        .and_then(Value::as_str)
        .map(str::to_owned)
    };
    assert_eq!(
        annotations("prometheus.io/scrape").as_deref(),
        Some("true"),
        "{}: spec.template.metadata.annotations.prometheus.io/scrape",
        deployment.what()
    );
    assert_eq!(
        annotations("prometheus.io/port"),
        Some(port.to_string()),
        "{}: spec.template.metadata.annotations.prometheus.io/port must be the `http` port",
        deployment.what()
    );
    assert_eq!(
        annotations("prometheus.io/path").as_deref(),
        Some("/metrics"),
        "{}: spec.template.metadata.annotations.prometheus.io/path",
        deployment.what()
    );
}

#[test]
fn mounted_settings_parse_and_use_the_redis_service() {
    let docs = load_all();
    let deployment = find(&docs, "Deployment", "mm");
    let container = mm_container(deployment);

    // The settings volume, its ConfigMap and where the server reads it.
    let volumes = seq(at(
        &deployment.value,
        &["spec", "template", "spec", "volumes"],
    ));
    let (volume, config_map) = volumes
        .iter()
        .find_map(|v| {
            let cm = at(v, &["configMap", "name"]).and_then(Value::as_str)?;
            Some((v.get("name").and_then(Value::as_str)?, cm))
        })
        .unwrap_or_else(|| {
            panic!(
                "{}: no configMap volume for the settings",
                deployment.what()
            )
        });
    let config_map = find(&docs, "ConfigMap", config_map);
    let mount = seq(container.get("volumeMounts"))
        .iter()
        .find(|m| m.get("name").and_then(Value::as_str) == Some(volume))
        .and_then(|m| m.get("mountPath").and_then(Value::as_str))
        .unwrap_or_else(|| {
            panic!(
                "{}: container `mm` does not mount volume `{volume}`",
                deployment.what()
            )
        });
    let mut words = string_list(container.get("command"));
    words.extend(string_list(container.get("args")));
    let config_path = config_arg(&words)
        .or_else(|| env_value(container, "MM_CONFIG"))
        .unwrap_or_else(|| {
            panic!(
                "{}: container `mm` sets neither --config nor MM_CONFIG",
                deployment.what()
            )
        });
    let key = config_path
        .strip_prefix(&format!("{}/", mount.trim_end_matches('/')))
        .unwrap_or_else(|| {
            panic!(
                "{}: settings path `{config_path}` is not under the ConfigMap mount `{mount}`",
                deployment.what()
            )
        });
    let text = at(&config_map.value, &["data", key])
        .and_then(Value::as_str)
        .unwrap_or_else(|| {
            panic!(
                "{}: no data.`{key}` (the file {} reads)",
                config_map.what(),
                deployment.what()
            )
        });
    let what = format!("{}: data.{key}", config_map.what());
    let settings = parse_settings(text, &what);

    let url = settings
        .get("embedding_cache.redis_url")
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| panic!("{what}: no string embedding_cache.redis_url"));
    let (host, port) = redis_host_port(url, &format!("{what}: embedding_cache.redis_url"));
    assert_service_serves(
        &docs,
        &host,
        port,
        &format!("{what}: embedding_cache.redis_url"),
    );
    let env = "CORE_MODEL_MANAGER_EMBEDDING_CACHE_REDIS_URL";
    if let Some(url) = env_value(container, env) {
        let what = format!("{}: env {env}", deployment.what());
        let (host, port) = redis_host_port(&url, &what);
        assert_service_serves(&docs, &host, port, &what);
    }

    assert_eq!(
        text.trim(),
        read("deploy/settings.toml").trim(),
        "{what}: differs from deploy/settings.toml (keep the two identical)"
    );

    // The model files and the runtime the settings name are where the image puts them.
    let destinations: Vec<String> = dockerfile_instructions()
        .into_iter()
        .filter(|(op, _)| op == "COPY")
        .filter_map(|(_, rest)| rest.split_whitespace().last().map(str::to_owned))
        .collect();
    for (key, value) in &settings {
        if !(key.ends_with("local_path")
            || key.ends_with("tokenizer_path")
            || key == "onnx.runtime_path")
        {
            continue;
        }
        let path = value
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {key} is not a string"));
        assert!(
            destinations.iter().any(|d| {
                let d = d.trim_end_matches('/');
                path == d || path.starts_with(&format!("{d}/"))
            }),
            "{what}: {key} = `{path}` is not under any COPY destination of deploy/Dockerfile"
        );
    }
}

#[test]
fn deploy_settings_parse_as_toml() {
    let what = "deploy/settings.toml";
    let settings = parse_settings(&read(what), what);
    for key in [
        "embedding_cache.redis_url",
        "embedding_cache.redis_key_prefix",
        "embedding_cache.redis_timeout_ms",
    ] {
        assert!(settings.contains_key(key), "{what}: no {key}");
    }
    // Every key must be one the core knows, with a valid value.
    if let Err(e) = model_manager::Settings::from_toml_str(&read(what), "/etc/mm") {
        panic!("{what}: {e}");
    }
}
