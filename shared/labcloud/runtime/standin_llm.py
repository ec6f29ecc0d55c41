"""The local stand-in for a foundation model: transparent, deterministic, and honest about what it is.

No model weights can be downloaded, so the LLM APIs of the local cloud (Bedrock's InvokeModel and Converse)
answer from this module. It is not a language model: it retrieves the course note that best matches the
question (TF-IDF cosine over a few dozen short notes on cloud AI) and replies with it, every reply beginning
with "[local stand-in model]". The same input always gives the same output; temperature and the system
prompt are accepted and counted, but do not change the answer.

Models that take a raw prompt (Llama, Mistral, Titan Text) are answered on its last user turn
(`question_in_prompt`, which reads their chat templates); the whole prompt still counts as input.

Tokens: one token per word (a run of letters, digits and underscores) and one per punctuation character,
`TOKEN_PATTERN` below. Real tokenizers (BPE) give roughly 1.3 tokens per English word, so counts are of the
same order; input and output are counted the same way, and `max_tokens` cuts the reply after that many.

Embeddings: a hashing embedding (each word and word pair hashed to a signed dimension, 1 + log(count)
weights, L2-normalised): texts that share words are close, as with a real embedding model, but synonyms are
not.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import cache

PREFIX = "[local stand-in model]"
TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")

# (topic, note). Short, checked statements from the course; the stand-in answers with one of them.
COURSE_NOTES: tuple[tuple[str, str], ...] = (
    (
        "this stand-in model",
        "I am the local cloud's deterministic stand-in for a foundation model, not a real LLM. I answer by "
        "retrieving the course note that best matches your question, so the same question always gets the same "
        "answer. On a real cloud the same request reaches the real model.",
    ),
    (
        "IaaS, PaaS and SaaS",
        "IaaS gives you machines (EC2, Compute Engine VMs) on which you install the stack yourself; PaaS runs "
        "your code or container for you (SageMaker training, Vertex AI custom training, Azure ML jobs); SaaS is "
        "a finished application or API, such as a hosted foundation model.",
    ),
    (
        "spot instances",
        "Spot (preemptible) capacity costs up to about 90% less than on-demand, but AWS can reclaim a spot "
        "instance with a two-minute interruption notice (Google Cloud gives about 30 seconds). Memory is lost, "
        "so only work saved in a checkpoint survives.",
    ),
    (
        "checkpoints",
        "A long training job should save checkpoints regularly (model weights, optimizer state, epoch and step) "
        "to durable storage and resume from the latest one when it restarts. Spot training needs this: an "
        "interrupted job without checkpoints starts over from the beginning.",
    ),
    (
        "SageMaker managed spot training",
        "SageMaker managed spot training is enabled on the estimator with use_spot_instances=True, max_wait "
        "(at least max_run) and checkpoint_s3_uri; SageMaker syncs /opt/ml/checkpoints to that S3 URI so a "
        "restarted job can resume.",
    ),
    (
        "checkpoint interval",
        "Young's formula gives a good checkpoint interval: tau = sqrt(2 C M), where C is the time to write one "
        "checkpoint and M the mean time between interruptions. Checkpointing more often wastes time writing; "
        "less often loses more work per interruption.",
    ),
    (
        "SageMaker training jobs",
        "A SageMaker training job runs your entry point script in a framework container on the instances you "
        "ask for. The script reads data from SM_CHANNEL_<NAME> directories, hyperparameters as command-line "
        "arguments, and writes the model to SM_MODEL_DIR, which SageMaker uploads to S3 as model.tar.gz.",
    ),
    (
        "distributed training on SageMaker",
        "For PyTorch DDP across several instances, set instance_count greater than 1 and "
        "distribution={'torch_distributed': {'enabled': True}}; SageMaker starts torchrun on every host with the "
        "right rank, world size and master address.",
    ),
    (
        "SageMaker endpoints",
        "A SageMaker real-time endpoint serves a model from inference code with model_fn, input_fn, predict_fn "
        "and output_fn. Endpoints bill per instance-hour while they run, even when idle, so delete them when "
        "you are done.",
    ),
    (
        "canary deployments",
        "A canary deployment sends a small share of traffic (for example 10%) to a new model variant, watches "
        "its error rate and latency, and shifts the rest only when it behaves; SageMaker production variants "
        "with weights and update_endpoint_weights_and_capacities do this.",
    ),
    (
        "GPU instances",
        "GPU instance families differ by accelerator: AWS p4d has eight NVIDIA A100s, p5 eight H100s, g5 NVIDIA "
        "A10G GPUs for cheaper inference and fine-tuning. Pick the smallest instance whose GPU memory fits the "
        "model, activations and batch.",
    ),
    (
        "GPU memory",
        "Training a model in mixed precision with Adam needs about 16 bytes per parameter (weights, gradients "
        "and two optimizer moments, plus a float32 master copy), before activations; inference in 16-bit needs "
        "about 2 bytes per parameter.",
    ),
    (
        "cloud costs",
        "Cloud compute is billed per second or hour while it runs: the cost of a job is the hourly price times "
        "the instance count times the hours. Stop endpoints, notebooks and clusters you do not use, and set "
        "budgets and alerts.",
    ),
    (
        "Bedrock",
        "Amazon Bedrock serves foundation models (Anthropic Claude, Amazon Titan and Nova, Meta Llama, Mistral) "
        "behind one API. invoke_model takes the provider's own request body; converse takes one message format "
        "for every chat model. You pay per input and output token.",
    ),
    (
        "tokens and pricing",
        "LLM APIs bill per token: input tokens (the prompt, the system prompt and the conversation history) "
        "and output tokens, which cost several times more. max_tokens caps the output; a reply cut by it "
        "reports stop_reason max_tokens.",
    ),
    (
        "temperature",
        "Temperature scales the randomness of sampling: 0 makes a model nearly deterministic, higher values "
        "make answers more varied. For extraction and classification use a low temperature.",
    ),
    (
        "embeddings",
        "An embedding model maps text to a vector so that texts with similar meaning are close, usually "
        "compared by cosine similarity. Retrieval-augmented generation (RAG) embeds documents, retrieves the "
        "nearest ones to a question, and puts them in the prompt.",
    ),
    (
        "Azure OpenAI",
        "Azure OpenAI serves OpenAI models from a deployment you create in your Azure resource; the client "
        "calls the deployment name, not the model name, with an api-version, and quotas are set in tokens "
        "per minute.",
    ),
    (
        "Vertex AI",
        "Vertex AI custom training runs your script or container on Google Cloud machines; the model goes to "
        "AIP_MODEL_DIR in Cloud Storage, is registered in the Model Registry, and is deployed to an endpoint "
        "that serves predictions.",
    ),
    (
        "BigQuery ML",
        "BigQuery ML trains models with SQL: CREATE MODEL ... OPTIONS(model_type='logistic_reg', "
        "input_label_cols=[...]) AS SELECT ...; ML.EVALUATE reports metrics and ML.PREDICT adds "
        "predicted_<label> columns.",
    ),
    (
        "fraud review of a flagged card payment",
        "A flagged card payment is worth a closer look when it is unusual for the card: a large amount, at night, "
        "in a risky merchant category, from a new account, abroad, or in a burst of payments within a day. Check "
        "the card's recent history and confirm with the card holder before blocking it.",
    ),
    (
        "label leakage",
        "Label leakage is a feature that is known only because of the outcome, such as a chargeback filed after "
        "a fraud. It makes evaluation metrics look excellent and fails in production; train only on what is "
        "known at prediction time.",
    ),
    (
        "Azure Machine Learning",
        "Azure Machine Learning runs command jobs on a compute cluster: you give the code folder, the command, "
        "an environment and inputs, and the job streams its logs; clusters can scale to zero nodes when idle.",
    ),
    (
        "Lambda cold starts",
        "A Lambda cold start happens when no warm execution environment is free: Lambda starts one, loads your "
        "code and runs the module's top level (the Init Duration in the REPORT log line). Warm invocations "
        "reuse the environment and skip this.",
    ),
    (
        "Lambda models",
        "Load a model in a Lambda function at module level, outside the handler: it is loaded once per "
        "execution environment during the cold start, and every warm invocation reuses it.",
    ),
    (
        "provisioned concurrency",
        "Lambda provisioned concurrency keeps a number of execution environments initialised and ready on a "
        "published version or alias, so invocations on them have no cold start; you pay for it by the hour "
        "whether or not it is used.",
    ),
    (
        "Lambda limits",
        "A Lambda function runs for at most 15 minutes, with 128 MB to 10,240 MB of memory (CPU grows with "
        "memory); a .zip package is at most 50 MB zipped and 250 MB unzipped, a container image up to 10 GB.",
    ),
    (
        "Lambda pricing",
        "A Lambda function costs 0.20 USD per million requests plus its duration in GB-seconds: the billed "
        "duration, rounded up to the millisecond, times the configured memory in GB.",
    ),
    (
        "serverless GPUs",
        "AWS Lambda, AWS Fargate and SageMaker Serverless Inference have no GPUs, whatever the memory size; "
        "Google Cloud Run services can attach an NVIDIA GPU, and on AWS GPU containers run on EC2 GPU "
        "instances (ECS, EKS) or on SageMaker GPU endpoints.",
    ),
    (
        "quantization",
        "Quantizing weights from float32 to int8 makes a model about four times smaller and often faster on "
        "CPUs, at a small accuracy cost; it helps models fit serverless size limits.",
    ),
    (
        "Kubernetes GPUs",
        "A Kubernetes container asks for a GPU with resources.limits of nvidia.com/gpu: 1; the NVIDIA device "
        "plugin advertises the node's GPUs to the kubelet so the scheduler can place such pods.",
    ),
    (
        "KEDA",
        "KEDA scales Kubernetes deployments on event sources such as an SQS queue's length, including down to "
        "zero replicas; the HPA alone scales on CPU or memory and keeps at least one replica.",
    ),
    (
        "HPA",
        "The Horizontal Pod Autoscaler computes desiredReplicas = ceil(currentReplicas * currentMetric / "
        "targetMetric) and keeps the result between minReplicas and maxReplicas.",
    ),
    (
        "Kubeflow Pipelines",
        "Kubeflow Pipelines builds ML workflows from components, Python functions run in containers, whose "
        "outputs feed the next steps; the compiled pipeline runs on a cluster or locally.",
    ),
    (
        "S3 storage",
        "S3 stores objects in buckets; Standard storage costs about 0.023 USD per GB-month, with cheaper "
        "classes (Infrequent Access, Glacier) for data you rarely read. Requests are billed too.",
    ),
    (
        "data formats",
        "Columnar formats such as Parquet store each column together and compressed, so training and "
        "analytics read only the columns they need; CSV is simple but large and slow to parse.",
    ),
    (
        "CloudWatch",
        "CloudWatch collects logs and metrics; put_metric_data publishes a custom metric such as prediction "
        "latency, and an alarm fires when the metric crosses a threshold for a number of periods.",
    ),
    (
        "model monitoring",
        "Model monitoring compares live inputs with a training baseline to detect data drift, for example with "
        "the population stability index (PSI) or the Kolmogorov-Smirnov statistic; accuracy needs ground-truth "
        "labels, which often arrive later.",
    ),
    (
        "data capture",
        "SageMaker data capture saves a share of an endpoint's requests and responses to S3 "
        "(DataCaptureConfig); Model Monitor compares them with a baseline on a schedule.",
    ),
    (
        "MLflow",
        "MLflow tracks experiments (parameters, metrics and artifacts of each run), keeps a model registry "
        "with versions and aliases, and can store artifacts in S3; promoting a model can be as simple as "
        "moving an alias.",
    ),
    (
        "CI/CD for ML",
        "An ML CI/CD pipeline tests the code, trains the model, checks its metrics against a gate and the "
        "current production model, and only then registers and deploys it, with a rollback path.",
    ),
    (
        "rollback",
        "Roll a model back by pointing the production alias or endpoint variant at the previous version; keep "
        "old model versions and their configuration so that rollback is one step.",
    ),
)

_STOPWORDS = frozenset(
    re.findall(
        r"\w+",
        "a an and are as at be by can do does for from how i in is it its of on or should so that the their them "
        "then there these this to what when where which who why will with would you your my me we our",
    )
)
_MIN_SCORE = 0.05  # below this cosine, no note is about the question


def tokenize(text: str) -> list[str]:
    return TOKEN_PATTERN.findall(text)


def count_tokens(text: str) -> int:
    return len(TOKEN_PATTERN.findall(text))


def _terms(text: str) -> list[str]:
    """Lower-case content words, plurals folded (checkpoints -> checkpoint), for retrieval."""
    words = (w.lower() for w in re.findall(r"[A-Za-z0-9]+", text))
    return [_singular(w) for w in words if w not in _STOPWORDS]


def _singular(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


@dataclass(frozen=True)
class _Index:
    idf: dict[str, float]
    vectors: tuple[dict[str, float], ...]


def _weights(terms: list[str], idf: dict[str, float]) -> dict[str, float]:
    vector = {term: count * idf[term] for term, count in Counter(terms).items() if term in idf}
    norm = math.sqrt(sum(v * v for v in vector.values())) or 1.0
    return {term: v / norm for term, v in vector.items()}


@cache
def _index() -> _Index:
    documents = [_terms(f"{topic} {topic} {note}") for topic, note in COURSE_NOTES]  # the topic counts double
    frequency = Counter(term for terms in documents for term in set(terms))
    idf = {term: math.log((1 + len(documents)) / (1 + df)) + 1 for term, df in frequency.items()}
    return _Index(idf, tuple(_weights(terms, idf) for terms in documents))


def best_note(question: str) -> tuple[int, float]:
    """The index of the course note closest to the question and its cosine (ties: the earlier note)."""
    index = _index()
    query = _weights(_terms(question), index.idf)
    scores = [sum(w * doc.get(term, 0.0) for term, w in query.items()) for doc in index.vectors]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return best, scores[best]


def answer(question: str) -> str:
    """The stand-in's full reply to a question, before any max_tokens or stop sequence."""
    note, score = best_note(question)
    if score < _MIN_SCORE:
        topics = ", ".join(topic for topic, _ in COURSE_NOTES[1:12])
        return (
            f"{PREFIX} I am the local cloud's deterministic stand-in, not a real LLM, and none of my course notes "
            f"matches your question. Ask me about a course topic, for example: {topics}."
        )
    topic, text = COURSE_NOTES[note]
    return f"{PREFIX} From the course notes on {topic}: {text}"


# The last user turn of a raw prompt, in the chat templates the Bedrock models take as a plain string.
_USER_TURNS = (
    re.compile(r"<\|start_header_id\|>user<\|end_header_id\|>(.*?)(?:<\|eot_id\|>|$)", re.S),  # Llama 3
    re.compile(r"\[INST\](.*?)(?:\[/INST\]|$)", re.S),  # Mistral and Llama 2
    re.compile(r"(?:^|\n)User:(.*?)(?:\nBot:|$)", re.S),  # Amazon Titan Text
)


def question_in_prompt(prompt: str) -> str:
    """The question a raw prompt asks: its last user turn when it follows a chat template, else the whole text."""
    for template in _USER_TURNS:
        if turns := template.findall(prompt):
            return turns[-1].strip()
    return prompt.strip()


@dataclass(frozen=True)
class Completion:
    text: str
    stop_reason: str  # end_turn | max_tokens | stop_sequence
    stop_sequence: str | None
    input_tokens: int
    output_tokens: int


def complete(
    question: str, input_texts: list[str], max_tokens: int, stop_sequences: list[str] | tuple[str, ...] = ()
) -> Completion:
    """Answer `question` (the last user turn); `input_texts` is everything the model reads, for input tokens."""
    text = answer(question)
    spans = [m.end() for m in TOKEN_PATTERN.finditer(text)]
    cut, reason, stopped_by = len(text), "end_turn", None
    if len(spans) > max_tokens:
        cut, reason = spans[max_tokens - 1], "max_tokens"
    for sequence in stop_sequences:
        at = text.find(sequence) if sequence else -1
        if 0 <= at < cut:
            cut, reason, stopped_by = at, "stop_sequence", sequence
    output = text[:cut]
    return Completion(
        text=output,
        stop_reason=reason,
        stop_sequence=stopped_by,
        input_tokens=sum(count_tokens(t) for t in input_texts),
        output_tokens=count_tokens(output),
    )


def _bucket(feature: str, dimensions: int) -> tuple[int, float]:
    digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % dimensions, 1.0 if (value >> 63) & 1 else -1.0


def embed(text: str, dimensions: int = 1024, normalize: bool = True) -> list[float]:
    """A deterministic hashing embedding of `text` (words and word pairs), unit length when `normalize`."""
    words = [w.lower() for w in re.findall(r"\w+", text)]
    features = Counter(words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)])
    vector = [0.0] * dimensions
    for feature, count in sorted(features.items()):
        position, sign = _bucket(feature, dimensions)
        vector[position] += sign * (1.0 + math.log(count))
    if normalize:
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        vector = [v / norm for v in vector]
    return [round(v, 7) for v in vector]
