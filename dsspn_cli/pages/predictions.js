// The predictions page (dsspn predict --html). Its data (dsspn_cli/pages/predictions.py):
// index.html holds the nodes (the tree's concepts, and for --classes the classes of several
// concepts and 'other') and the list of images; NAME_page.js, read only when its image is
// opened, calls dsspnImage(key, {width, height, nodes, confidence, confidenceBlock}): two
// PNGs, a pixel's node in red * 256 + green of the first, and in the second (grey) the mean
// confidence in percent of each block of confidenceBlock x confidenceBlock pixels;
// NAME_photo.jpg is shown under them.
// What a pixel shows: its node, or the node's ancestor whose row is folded in the tree
// panel; the depth slider folds every row at that depth, so it cuts the whole map there.
"use strict";

(() => {
  const {el, readData, notice, percent, shape, ancestors, upward, unfoldAbove} = dsspn;
  const doc = readData();
  if (!doc) {
    notice("This is dsspn's page template, without predictions: write one with " +
           "'dsspn predict IMAGES --html'.", "info");
    return;
  }
  const nodes = doc.nodes;
  const images = doc.images;
  const count = nodes.length;
  const {root, children, depth, order} = shape(nodes);
  const rgb = nodes.map((node) => [1, 3, 5].map((k) => parseInt(node.colour.slice(k, k + 2), 16)));
  // A concept of the tree with concepts below it, and no dataset label or class of its own:
  // a pixel there stopped above what it could have been (--level, a hedged answer).
  const inner = nodes.map((node, i) => !node.kind && node.label === undefined &&
                          children[i].some((k) => !nodes[k].kind));

  const gallery = document.getElementById("gallery");
  const viewer = document.getElementById("viewer");
  const thumbBox = document.getElementById("thumbs");
  const filter = document.getElementById("filter");
  const under = document.getElementById("under");
  const photo = document.getElementById("photo");
  const canvas = document.getElementById("labels");
  const context = canvas.getContext("2d");
  const tip = document.getElementById("tip");
  const hover = document.getElementById("hover");
  const cut = document.getElementById("cut");
  const cutValue = document.getElementById("cut-value");
  const opacity = document.getElementById("opacity");
  const predicted = document.getElementById("predicted");
  const selection = document.getElementById("selection");
  const imageName = document.getElementById("image-name");
  const HOVER_HINT = hover.textContent;

  /** The name a person reads: the dataset's label or the class with its id, the concept beside. */
  function shownName(i) {
    const node = nodes[i];
    if (node.label === undefined) return node.name;
    const id = ` [${node.labelId}]`;
    if (node.kind === "union") return `${node.label}${id} (${node.concepts.join(", ")})`;
    if (node.kind === "other" || node.label.toLowerCase() === node.name.toLowerCase()) {
      return `${node.label}${id}`;
    }
    return `${node.label}${id} (${node.name})`;
  }

  function swatch(i) {
    return el("span", {class: "swatch", style: {background: nodes[i].colour}});
  }

  /** A relative path as a URL: each part escaped, so '#', '?' and '%' in names stay names. */
  function url(path) {
    return path.split("/").map(encodeURIComponent).join("/");
  }

  // --------------------------------------------------------------------------- header
  const what = doc.mode === "classes"
    ? "the chosen classes"
    : doc.mode === "dataset" ? `${doc.dataset}'s labels` : "the tree's concepts";
  document.getElementById("summary").textContent =
    `${images.length} image${images.length === 1 ? "" : "s"} · ${what}` +
    (doc.level === null || doc.level === undefined ? ""
      : ` · cut at depth ${doc.level} (--level)`) +
    (doc.model ? ` · model ${doc.model}` : "");

  // --------------------------------------------------------------------------- gallery
  const thumbs = images.map((image) => el("a", {
    class: "thumb", href: "#image=" + encodeURIComponent(image.key), title: image.key},
  el("img", {src: url(image.thumb), loading: "lazy", alt: image.name}),
  el("div", {class: "caption"}, image.key),
  el("div", {class: "top"}, image.top.map(([node, share]) =>
    `${shownName(node)} ${percent(share)}`).join(" · "))));
  thumbBox.replaceChildren(...thumbs);

  function applyFilter() {
    const query = filter.value.trim().toLowerCase();
    let shown = 0;
    images.forEach((image, i) => {
      thumbs[i].hidden = Boolean(query) && !image.key.toLowerCase().includes(query);
      if (!thumbs[i].hidden) shown++;
    });
    document.getElementById("shown").textContent =
      query ? `${shown} of ${images.length}` : `${images.length} images: click one to open it`;
  }
  filter.addEventListener("input", applyFilter);
  applyFilter();

  // --------------------------------------------------------------------------- one image
  const waiting = new Map();      // image key -> resolve, while its NAME_page.js loads
  window.dsspnImage = (key, data) => {
    const resolve = waiting.get(key);
    if (resolve) {
      waiting.delete(key);
      resolve(data);
    }
  };

  function load(image) {
    return new Promise((resolve, reject) => {
      waiting.set(image.key, resolve);
      const script = el("script", {src: url(image.data)});
      script.addEventListener("load", () => {
        script.remove();
        if (waiting.delete(image.key)) {
          reject(new Error(`${image.data} holds no data for ${image.key}`));
        }
      });
      script.addEventListener("error", () => {
        script.remove();
        waiting.delete(image.key);
        reject(new Error(`cannot read ${image.data}: dsspn predict --html writes it beside ` +
                         "index.html; was it moved or deleted?"));
      });
      document.head.append(script);
    });
  }

  /** The RGBA pixels of a PNG given as a data URL (a file's pixels could not be read). */
  async function pixelsOf(source, width, height) {
    const picture = new Image();
    picture.src = source;
    await picture.decode();
    const scratch = el("canvas", {width, height});
    const reader = scratch.getContext("2d", {willReadFrequently: true});
    reader.drawImage(picture, 0, 0);
    return reader.getImageData(0, 0, width, height).data;
  }

  /** The map's nodes and confidences, and the pixels of each node. */
  async function decode(data) {
    const block = data.confidenceBlock;
    const blocksWide = Math.ceil(data.width / block);
    const [pixels, percents] = await Promise.all([
      pixelsOf(data.nodes, data.width, data.height),
      pixelsOf(data.confidence, blocksWide, Math.ceil(data.height / block))]);
    const size = data.width * data.height;
    const map = new Uint16Array(size);
    const own = new Float64Array(count);
    let unknown = 0;
    for (let p = 0, q = 0; p < size; p++, q += 4) {
      let node = (pixels[q] << 8) | pixels[q + 1];
      if (node >= count) { node = root; unknown++; }
      map[p] = node;
      own[node]++;
    }
    // The grey image's red channel: one byte per block.
    const confidence = new Uint8Array(percents.length / 4);
    for (let b = 0; b < confidence.length; b++) confidence[b] = percents[4 * b];
    if (unknown) {
      notice(`${unknown} pixels name a node this index.html does not have (written by ` +
             "another run?); they are shown as the root.");
    }
    const total = Float64Array.from(own);
    upward(nodes, order, (i, parent) => { total[parent] += total[i]; });
    return {map, confidence, block, blocksWide, own, total, size, width: data.width,
            height: data.height};
  }

  let current = null;     // the image open: its index, map, confidences, pixel counts
  let opening = 0;        // which open() is the latest, so a slow load cannot replace it
  let expanded = new Uint8Array(count);
  let selected = -1;
  let shownAs = new Int32Array(count);
  let frame = null;
  let galleryScroll = 0;

  async function open(index) {
    const image = images[index];
    const ticket = ++opening;
    if (!gallery.hidden) galleryScroll = window.scrollY;
    gallery.hidden = true;
    viewer.hidden = false;
    imageName.textContent = `${image.key} (${index + 1} of ${images.length}) · reading…`;
    let decoded;
    let data;
    try {
      data = await load(image);
      decoded = await decode(data);
    } catch (error) {
      if (ticket === opening) {
        imageName.textContent = `${image.key} (${index + 1} of ${images.length})`;
        notice(error.message);
      }
      return;
    }
    if (ticket !== opening) return;
    document.getElementById("notice").hidden = true;
    current = {index, image, ...decoded};
    imageName.textContent = `${image.key} (${index + 1} of ${images.length})`;
    document.title = `${image.key} · dsspn predictions`;
    under.src = url(image.photo);
    photo.src = url(image.photo);
    for (const stage of document.querySelectorAll(".stage")) {
      stage.style.maxWidth = `min(100%, calc(75vh * ${current.width / current.height}))`;
    }
    canvas.width = current.width;
    canvas.height = current.height;
    frame = context.createImageData(current.width, current.height);
    selected = -1;
    let deepest = 0;
    for (let i = 0; i < count; i++) if (current.total[i] > 0) deepest = Math.max(deepest, depth[i]);
    cut.max = String(deepest);
    cutTo(deepest);
    window.scrollTo(0, 0);
  }

  function cutTo(level) {
    unfoldAbove(expanded, depth, level);
    cut.value = String(level);
    cutValue.textContent = String(level);
    render();
  }

  /** Colour the map: each pixel as the node it is shown as, the unselected ones darkened. */
  function render() {
    if (!current) return;
    const visible = new Uint8Array(count);
    const chosen = new Uint8Array(count);
    for (const i of order) {
      const parent = nodes[i].parent;
      if (parent === null) {
        visible[i] = 1;
        shownAs[i] = i;
      } else {
        visible[i] = visible[parent] && expanded[parent] ? 1 : 0;
        shownAs[i] = visible[i] ? i : shownAs[parent];
      }
      chosen[i] = selected < 0 || i === selected || (parent !== null && chosen[parent]) ? 1 : 0;
    }
    const colours = new Uint8ClampedArray(count * 4);
    for (let i = 0; i < count; i++) {
      const colour = chosen[i] ? rgb[shownAs[i]] : [24, 24, 24];
      colours.set([colour[0], colour[1], colour[2], chosen[i] ? 255 : 190], 4 * i);
    }
    // One 32-bit word per pixel, looked up by node: the same byte order as the frame's.
    const table = new Uint32Array(colours.buffer);
    const pixels = new Uint32Array(frame.data.buffer);
    const map = current.map;
    for (let p = 0; p < map.length; p++) pixels[p] = table[map[p]];
    context.putImageData(frame, 0, 0);
    selection.hidden = selected < 0;
    selection.textContent = selected < 0 ? "" : `showing the pixels of ${shownName(selected)}: ` +
      `${percent(current.total[selected] / current.size)} (click it again: all)`;
    drawTree(visible);
  }

  function drawTree(visible) {
    const rows = [];
    const add = (i, level) => {
      const kids = children[i].filter((k) => current.total[k] > 0)
        .sort((a, b) => current.total[b] - current.total[a] || a - b);
      rows.push(row(i, level, kids));
      if (!expanded[i] || !kids.length) return;
      if (current.own[i] > 0) rows.push(itself(i, level + 1));
      for (const k of kids) add(k, level + 1);
    };
    if (visible[root]) add(root, 0);
    predicted.replaceChildren(...rows);
  }

  function row(i, level, kids) {
    const stops = inner[i] && current.own[i] > 0;
    return el("div", {
      class: "row" + (i === selected ? " selected" : ""), role: "treeitem", "data-node": i,
      "aria-expanded": kids.length ? String(Boolean(expanded[i])) : null,
      style: {"padding-left": `${level * 14}px`}},
    kids.length
      ? el("button", {class: "toggle", type: "button", title: expanded[i] ? "fold" : "unfold",
                      on: {click: () => { expanded[i] ^= 1; unsetCut(); render(); }}},
           expanded[i] ? "▾" : "▸")
      : el("span", {class: "toggle"}),
    swatch(i),
    el("span", {class: "name", on: {click: () => choose(i)},
                title: ancestors(nodes, i).concat([i]).map((n) => nodes[n].name).join(" › ")},
       shownName(i)),
    stops && !expanded[i] ? el("span", {class: "stops", title: stopsTitle()}, "stops here") : null,
    el("span", {class: "share"}, percent(current.total[i] / current.size)));
  }

  /** The pixels of an unfolded concept that go no deeper: a row of their own. */
  function itself(i, level) {
    return el("div", {class: "row itself", style: {"padding-left": `${level * 14}px`},
                      title: stopsTitle()},
    el("span", {class: "toggle"}), swatch(i),
    el("span", {class: "name"}, `${shownName(i)} itself`),
    el("span", {class: "share"}, percent(current.own[i] / current.size)));
  }

  function stopsTitle() {
    return "these pixels stop at this concept, above its children: where a dataset's label " +
      "or a class is this concept, where --level cuts, or where the answer was hedged";
  }

  function choose(i) {
    selected = selected === i ? -1 : i;
    render();
  }

  function unsetCut() {
    cutValue.textContent = "—";
  }

  // --------------------------------------------------------------------------- hover
  function pointAt(event) {
    if (!current) return;
    const box = event.currentTarget.getBoundingClientRect();
    const x = Math.min(current.width - 1, Math.max(0, Math.floor(
      (event.clientX - box.left) / box.width * current.width)));
    const y = Math.min(current.height - 1, Math.max(0, Math.floor(
      (event.clientY - box.top) / box.height * current.height)));
    const p = y * current.width + x;
    const node = current.map[p];
    const block = current.block;
    const confidence = `${current.confidence[Math.floor(y / block) * current.blocksWide +
                                             Math.floor(x / block)]}%`;
    const path = ancestors(nodes, node).concat([node]);
    hover.classList.remove("muted");
    hover.replaceChildren(el("div", {}, path.map((n, k) => [k ? " › " : "",
      el("span", {class: "step" + (n === shownAs[node] ? " shown" : "")}, swatch(n), " ",
         shownName(n))])),
    el("div", {class: "muted"}, `pixel (${x}, ${y}) · confidence ${confidence}` +
       (inner[node] ? " · stops at this inner concept" : "")));
    if (event.currentTarget.dataset.view === "overlay") {
      tip.textContent = `${shownName(shownAs[node])} · ${confidence}`;
      tip.hidden = false;
      const left = event.clientX - box.left + 14;
      tip.style.left = `${Math.min(left, box.width - tip.offsetWidth - 4)}px`;
      tip.style.top = `${event.clientY - box.top + 14}px`;
    }
  }

  function pointAway() {
    tip.hidden = true;
    hover.classList.add("muted");
    hover.textContent = HOVER_HINT;
  }

  for (const stage of document.querySelectorAll(".stage")) {
    stage.addEventListener("mousemove", pointAt);
    stage.addEventListener("mouseleave", pointAway);
  }

  // --------------------------------------------------------------------------- navigation
  /** To the image before (-1) or after (1) the one open, round the end. */
  function step(by) {
    if (!current) return;
    const index = (current.index + by + images.length) % images.length;
    location.hash = "#image=" + encodeURIComponent(images[index].key);
  }

  function showGallery() {
    opening++;
    current = null;
    viewer.hidden = true;
    gallery.hidden = false;
    document.title = "dsspn predictions";
    window.scrollTo(0, galleryScroll);
  }

  function route() {
    const match = /^#image=(.*)$/.exec(location.hash);
    let key = null;
    try {
      key = match ? decodeURIComponent(match[1]) : null;
    } catch (error) {
      key = null;       // a hand-edited address: show the gallery
    }
    const index = key === null ? -1 : images.findIndex((image) => image.key === key);
    if (index < 0) showGallery();
    else open(index);
  }

  cut.addEventListener("input", () => cutTo(Number(cut.value)));
  opacity.addEventListener("input", () => { canvas.style.opacity = String(opacity.value / 100); });
  canvas.style.opacity = String(opacity.value / 100);
  document.getElementById("back").addEventListener("click", () => { location.hash = ""; });
  document.getElementById("previous").addEventListener("click", () => step(-1));
  document.getElementById("next").addEventListener("click", () => step(1));
  document.addEventListener("keydown", (event) => {
    // Keys typed into a field or moving a slider are theirs.
    if (viewer.hidden || event.target instanceof HTMLInputElement) return;
    if (event.key === "ArrowLeft" && current) step(-1);
    else if (event.key === "ArrowRight" && current) step(1);
    else if (event.key === "Escape") {
      if (selected >= 0) { selected = -1; render(); } else location.hash = "";
    }
  });
  window.addEventListener("hashchange", route);
  route();
})();
