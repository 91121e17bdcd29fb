"""The reference models of perfopt's benchmark, as PyTorch modules with
random weights (speed does not depend on trained weights)."""
import torch
from torch import nn
from torch.nn import functional as F


class ResBlock(nn.Module):
    def __init__(self, channels, kernel, dilations=(1, 3, 5)):
        super().__init__()
        self.convs1 = nn.ModuleList(
            [nn.Conv1d(channels, channels, kernel, dilation=d, padding=d * (kernel - 1) // 2) for d in dilations]
        )
        self.convs2 = nn.ModuleList([nn.Conv1d(channels, channels, kernel, padding=(kernel - 1) // 2) for _ in dilations])

    def forward(self, x):
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, 0.1)), 0.1))
        return x


class HiFiGAN(nn.Module):
    """HiFi-GAN V2's generator: mel (80 bins) in, waveform (256 samples per frame) out."""

    def __init__(self, mel=80, channels=128, rates=(8, 8, 2, 2), kernels=(16, 16, 4, 4), res_kernels=(3, 7, 11)):
        super().__init__()
        self.pre = nn.Conv1d(mel, channels, 7, padding=3)
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for rate, k in zip(rates, kernels):
            self.ups.append(nn.ConvTranspose1d(channels, channels // 2, k, rate, padding=(k - rate) // 2))
            channels //= 2
            self.blocks.append(nn.ModuleList([ResBlock(channels, rk) for rk in res_kernels]))
        self.post = nn.Conv1d(channels, 1, 7, padding=3)

    def forward(self, mel):
        x = self.pre(mel)
        for up, blocks in zip(self.ups, self.blocks):
            x = up(F.leaky_relu(x, 0.1))
            x = sum(b(x) for b in blocks) / len(blocks)
        return torch.tanh(self.post(F.leaky_relu(x, 0.1)))


class Encoder(nn.Module):
    """A 6-layer d=512 transformer encoder (the translation model's encoder)."""

    def __init__(self, d=512, layers=6, heads=8):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x):
        return self.encoder(x)


class DecoderStep(nn.Module):
    """One step of a 6-layer transformer decoder over a fixed-length memory,
    with a 32k-vocabulary projection."""

    def __init__(self, d=512, layers=6, heads=8, vocab=32000):
        super().__init__()
        layer = nn.TransformerDecoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.project = nn.Linear(d, vocab)

    def forward(self, token, memory):
        return self.project(self.decoder(token, memory))


class SpeakerEncoder(nn.Module):
    """A 3-layer LSTM speaker encoder: 160 frames of 40 features, a unit embedding out."""

    def __init__(self, features=40, hidden=256, embedding=256):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=3, batch_first=True)
        self.proj = nn.Linear(hidden, embedding)

    def forward(self, frames):
        out, _ = self.lstm(frames)
        e = F.relu(self.proj(out[:, -1]))
        return e / (e.norm(dim=1, keepdim=True) + 1e-6)


class TextEncoder(nn.Module):
    """A MiniLM-shaped sentence encoder: token ids and an attention mask in
    (int64), 6 layers of d=384, a mean-pooled embedding out. The token model."""

    def __init__(self, vocab=30522, d=384, layers=6, heads=12, positions=512):
        super().__init__()
        self.tokens = nn.Embedding(vocab, d)
        self.positions = nn.Embedding(positions, d)
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, input_ids, attention_mask):
        steps = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self.tokens(input_ids) + self.positions(steps)
        x = self.encoder(x, src_key_padding_mask=attention_mask == 0)
        mask = attention_mask.unsqueeze(-1).to(x.dtype)
        return (x * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class SmallEncoder(nn.Module):
    """A 2-layer d=128 transformer encoder over 16 steps: a sub-millisecond
    model, where perfopt's own per-call cost shows."""

    def __init__(self, d=128, layers=2, heads=4):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x):
        return self.encoder(x)


class StreamingVad(nn.Module):
    """A silero-vad-shaped streaming step: a 512-sample chunk and the
    recurrent state (h, c) in, a speech probability and the new state out;
    a conv frontend and one LSTM cell. Called once per 32 ms of audio."""

    def __init__(self, hidden=64):
        super().__init__()
        self.frontend = nn.Sequential(
            nn.Conv1d(1, 16, 9, stride=4, padding=4), nn.ReLU(),
            nn.Conv1d(16, 32, 9, stride=4, padding=4), nn.ReLU(),
            nn.Conv1d(32, hidden, 9, stride=4, padding=4), nn.ReLU(),
        )
        self.cell = nn.LSTMCell(hidden, hidden)
        self.decide = nn.Linear(hidden, 1)

    def forward(self, chunk, h, c):
        features = self.frontend(chunk.unsqueeze(1)).mean(dim=2)
        h, c = self.cell(features, (h, c))
        return torch.sigmoid(self.decide(h)), h, c


def build(name, batch):
    """(module, example inputs) for a reference model, weights seeded."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    if name == "vocoder":
        return HiFiGAN().eval(), [torch.randn(batch, 80, 100, generator=g)]
    if name == "encoder":
        return Encoder().eval(), [torch.randn(batch, 64, 512, generator=g)]
    if name == "decoder_step":
        return DecoderStep().eval(), [torch.randn(batch, 1, 512, generator=g), torch.randn(batch, 64, 512, generator=g)]
    if name == "speaker":
        return SpeakerEncoder().eval(), [torch.randn(batch, 160, 40, generator=g)]
    if name == "text_encoder":
        ids = torch.randint(0, 30522, (batch, 32), generator=g)
        mask = torch.ones(batch, 32, dtype=torch.int64)
        return TextEncoder().eval(), [ids, mask]
    if name == "small_encoder":
        return SmallEncoder().eval(), [torch.randn(batch, 16, 128, generator=g)]
    if name == "vad":
        return StreamingVad().eval(), [torch.randn(batch, 512, generator=g), torch.zeros(batch, 64),
                                       torch.zeros(batch, 64)]
    if name == "tiny":
        return nn.Linear(4, 4).eval(), [torch.randn(batch, 4, generator=g)]
    raise ValueError(name)


MODELS = ["vocoder", "encoder", "decoder_step", "speaker"]
