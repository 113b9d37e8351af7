// The Atlas link: shown when the server serves an atlas (ldam serve --atlas DIR).

async function showAtlasLink() {
  const link = document.getElementById("atlas-link");
  try {
    const answer = await fetch("/api/atlas", { cache: "no-store" });
    if (!answer.ok) return;
    const { atlas } = await answer.json();
    if (!atlas) return;
    link.textContent = `Atlas: ${atlas.units} units of ${atlas.layer}`;
    link.hidden = false;
  } catch {
    // No atlas link without the server; the page works on without it.
  }
}

showAtlasLink();
